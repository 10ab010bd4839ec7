"""Serve a kasp bundle over the KServe v2 / Open Inference protocol with kserve's data plane.

    python -m pipeline.serving.server BUNDLE [--name student] [--host 127.0.0.1] [--port 8080]

    POST /v2/models/<name>/infer  {"inputs": [{"name": "text", "shape": [n], "datatype": "BYTES", "data": [...]},
                                              {"name": "text_pair", ...}]}   # text_pair for pair tasks
         -> outputs "logits" (FP32 [n, k]) and, for classifiers, "label" (BYTES [n]); response parameters
            "tokens" (tokens kept per text), "truncated" and "empty" (indices of such texts), comma-separated
    JSON or the binary-data extension, with or without Content-Type (tritonclient's JSON mode sends none).
    The other routes (health, metadata, config, versions, statistics, repository index): pipeline/serving/v2app.py.

Every element is checked before it joins a batch (pipeline/serving/v2request.py): a wrong tensor name, datatype
or shape, an empty batch, more than --max-texts texts, a text over --max-chars characters, a non-string,
a lone surrogate, a NUL, a bad binary length, a body shorter or longer than it declares, or a body over
--max-body-bytes is a 4xx naming the input and element. Concurrent requests are batched: they wait up to
--max-delay-ms for each other, up to --max-batch texts per model call, one call at a time (a Bundle
reuses one infer request). If a batch fails, each of its requests is run again alone, so a failure
reaches only the request that caused it.

It binds 127.0.0.1 unless told otherwise (kserve 0.21's servers bind 0.0.0.0 with no option: see
pipeline/serving/v2app.py for what is used of kserve and why). Model control (load/unload) is off.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
import uuid
from pathlib import Path

from pipeline.serving.v2request import BadRequest, texts as check_texts

LOOPBACK = "127.0.0.1"
log = logging.getLogger("kserve")  # kserve's logger, by name: importing kserve here would load its protobufs
LIMITS = {"max_texts": 64, "max_chars": 2000, "max_body_bytes": 1 << 20, "max_batch": 32, "max_delay_ms": 5.0}


class Batcher:
    """Gathers concurrent requests into model calls of at most max_batch texts, one call at a time.

    `run(texts, pairs)` returns a tuple of arrays with one row per text; each request gets its rows back.
    A call that raises is retried request by request: only the request that fails gets the exception."""

    def __init__(self, run, max_batch: int, max_delay_s: float):
        self.run, self.max_batch, self.max_delay_s = run, max_batch, max_delay_s
        self.queue: asyncio.Queue | None = None
        self.task = None  # kept: the loop holds only a weak reference to a task
        self.calls = 0

    def alive(self) -> bool:
        """False once the batching loop has died: then nothing would answer."""
        return self.task is None or not self.task.done()

    async def submit(self, texts: list[str], pairs: list[str] | None) -> tuple:
        if self.queue is None:  # created in the server's event loop
            self.queue = asyncio.Queue()
            self.task = asyncio.get_running_loop().create_task(self._loop())
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, pairs, fut))
        return await fut

    async def _gather(self) -> list:
        loop = asyncio.get_running_loop()
        batch = [await self.queue.get()]
        deadline = loop.time() + self.max_delay_s
        while sum(len(b[0]) for b in batch) < self.max_batch and (left := deadline - loop.time()) > 0:
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except asyncio.TimeoutError:
                break
        return [b for b in batch if not b[2].done()]  # a client that went away cancelled its future

    async def _call(self, batch: list) -> None:
        texts = [t for b in batch for t in b[0]]
        pairs = None if batch[0][1] is None else [p for b in batch for p in b[1]]
        try:
            rows = await asyncio.get_running_loop().run_in_executor(None, self.run, texts, pairs)
        except Exception as e:
            if len(batch) == 1:
                if not batch[0][2].done():
                    batch[0][2].set_exception(e)
                return
            log.warning(
                "a batch of %d requests failed (%s: %s); running each alone",
                len(batch),
                type(e).__name__,
                str(e)[:200],
            )
            for one in batch:  # whose was it? each alone: the others are answered
                if not one[2].done():  # a client that went away needs no answer
                    await self._call([one])
            return
        self.calls += 1
        start = 0
        for b_texts, _, fut in batch:
            if not fut.done():
                fut.set_result(tuple(r[start : start + len(b_texts)] for r in rows))
            start += len(b_texts)

    async def _loop(self):
        while True:
            if not (batch := await self._gather()):
                continue
            try:
                await self._call(batch)
            except Exception as e:  # a fault of the batcher itself: answer the batch, keep the loop
                log.exception("batching failed")
                for *_, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)


def _notes_parameters(notes: list[dict]) -> dict:
    """Response parameters (v2 parameters are scalars): tokens kept per text, indices of truncated and empty texts."""
    return {
        "tokens": ",".join(str(n["tokens"]) for n in notes),
        "truncated": ",".join(str(i) for i, n in enumerate(notes) if n["truncated"]),
        "empty": ",".join(str(i) for i, n in enumerate(notes) if n["empty"]),
    }


def make_model(bundle_path: Path, name: str, limits: dict, threads: int | None):
    import kserve
    from kserve.errors import InvalidInput
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

    from pipeline.serving.runner import Bundle
    from pipeline.serving.v2app import VERSION, Stats

    class BundleModel(kserve.Model):
        def load(self) -> bool:
            self.bundle = Bundle(bundle_path, threads=threads)
            self.pairs = "text_pair" in self.bundle.input_names or self.bundle.manifest.get("pairs", False)
            self.batcher = Batcher(self._score, limits["max_batch"], limits["max_delay_ms"] / 1000)
            self.stats = Stats()
            self._score(["warm up"], ["warm up"] if self.pairs else None)  # the first request pays no set-up
            self.ready = True
            return self.ready

        def _score(self, texts, pairs):
            return self.bundle.logits(texts, pairs, limits["max_batch"]), self.bundle.token_counts(
                texts, pairs
            )

        async def healthy(self) -> bool:
            return self.ready and self.batcher.alive()

        def get_input_types(self):
            return [
                {"name": n, "datatype": "BYTES", "shape": [-1]}
                for n in (("text", "text_pair") if self.pairs else ("text",))
            ]

        def get_output_types(self):
            k = len(self.bundle.labels or [None])
            return [{"name": "logits", "datatype": "FP32", "shape": [-1, k]}] + (
                [{"name": "label", "datatype": "BYTES", "shape": [-1]}] if self.bundle.labels else []
            )

        def config(self) -> dict:
            """Triton-style model config, read-only: what a client needs to build requests."""

            def tensors(types):
                return [
                    {
                        "name": t["name"],
                        "data_type": "TYPE_STRING" if t["datatype"] == "BYTES" else "TYPE_FP32",
                        "dims": t["shape"],
                    }
                    for t in types
                ]

            return {
                "name": self.name,
                "platform": "kasp",
                "backend": self.bundle.manifest["engine"],
                "max_batch_size": 0,
                "input": tensors(self.get_input_types()),
                "output": tensors(self.get_output_types()),
                "parameters": {k: {"string_value": str(v)} for k, v in limits.items()},
            }

        def statistics(self) -> dict:
            return self.stats.as_triton(self.name, self.batcher.calls)

        async def predict(self, payload, headers=None, response_headers=None):
            start = time.perf_counter_ns()
            try:
                response, n = await self._predict(payload)
            except BaseException:
                self.stats.record(False, 0, start)
                raise
            self.stats.record(True, n, start)
            return response

        async def _predict(self, payload):
            if not isinstance(payload, InferRequest):  # kserve routes v1 (:predict) bodies here as dicts
                raise InvalidInput("this server speaks the v2 protocol: POST /v2/models/<name>/infer")
            try:
                texts, pairs = check_texts(
                    [(i.name, i.datatype, i.shape, i.data) for i in payload.inputs], self.pairs, limits
                )
            except BadRequest as e:
                raise InvalidInput(str(e)) from None
            logits, counts = await self.batcher.submit(texts, pairs)
            outputs = [InferOutput("logits", list(logits.shape), "FP32", logits)]
            if self.bundle.labels:
                labels = [a["label"] for a in self.bundle.answers(logits)]
                outputs.append(InferOutput("label", [len(labels)], "BYTES", labels))
            notes = self.bundle.notes(texts, pairs, counts)
            return InferResponse(
                payload.id or str(uuid.uuid4()),
                self.name,
                outputs,
                model_version=VERSION,
                parameters=_notes_parameters(notes),
                use_binary_outputs=payload.use_binary_outputs,
                requested_outputs=payload.request_outputs,
            ), len(texts)

    return BundleModel(name)


def body_limit(app, max_bytes: int):
    """ASGI middleware: a body over max_bytes gets 413, whether it declares its length or is chunked.
    The body is read (at most max_bytes + one chunk) before the app sees it, then replayed."""
    from kserve.logging import logger

    async def reply(scope, send, status: int, message: str):
        logger.warning("rejected %s %s: %d %s", scope.get("method"), scope.get("path"), status, message)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps({"error": message}).encode()})

    async def middleware(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and not length.isdigit():
            return await reply(scope, send, 400, f"bad content-length {length[:40]!r}")
        if length is not None and int(length) > max_bytes:
            return await reply(scope, send, 413, f"request body over the limit of {max_bytes} bytes")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client went away: nothing to answer
            chunks.append(message.get("body", b""))
            size, more = size + len(chunks[-1]), message.get("more_body", False)
            if size > max_bytes:
                return await reply(scope, send, 413, f"request body over the limit of {max_bytes} bytes")
        body = b"".join(chunks)

        async def replay():
            return {"type": "http.request", "body": body, "more_body": False}

        return await app(scope, replay, send)

    return middleware


def serve(bundle: Path, name: str, host: str, port: int, limits: dict, threads: int | None) -> None:
    """One model behind kserve's data plane, served by uvicorn on `host` (see pipeline/serving/v2app.py for why not
    kserve's ModelServer/RESTServer)."""
    import uvicorn
    from kserve.logging import configure_logging
    from kserve.model_repository import ModelRepository

    from pipeline.serving.v2app import BundleDataPlane, make_app

    configure_logging()
    registry = ModelRepository()
    model = make_model(bundle, name, limits, threads)
    model.load()
    registry.update(model)
    app = body_limit(make_app(BundleDataPlane(registry)), limits["max_body_bytes"])
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None, timeout_keep_alive=65)).run()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.serving.server", description=__doc__.split("\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--name", help="model name in the URL (default: the bundle's model)")
    ap.add_argument("--host", default=LOOPBACK, help="bind address (default loopback only)")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--threads", type=int, default=None)
    for k, v in LIMITS.items():
        ap.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=v)
    args = ap.parse_args(argv)
    if bad := [f"--{k.replace('_', '-')} {getattr(args, k)}" for k in LIMITS if getattr(args, k) <= 0]:
        ap.error(f"limits must be > 0: {', '.join(bad)}")
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads must be >= 1, got {args.threads}")
    from pipeline.serving.runner import verify

    name = args.name or verify(args.bundle).get("model", args.bundle.name)
    serve(args.bundle, name, args.host, args.port, {k: getattr(args, k) for k in LIMITS}, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
