"""Serve a kasp bundle over the KServe v2 / Open Inference protocol with kserve's ModelServer.

    python -m deploy.server BUNDLE [--name student] [--host 127.0.0.1] [--port 8080]

    GET  /v2/health/live, /v2/health/ready, /v2/models/<name>
    POST /v2/models/<name>/infer  {"inputs": [{"name": "text", "shape": [n], "datatype": "BYTES", "data": [...]},
                                              {"name": "text_pair", ...}]}   # text_pair for pair tasks
         -> outputs "logits" (FP32 [n, k]) and, for classifiers, "label" (BYTES [n])

Concurrent requests are batched: they wait up to --max-delay-ms for each other, up to --max-batch
texts per model call, and one call runs at a time (a Bundle reuses one infer request). A request
over --max-texts texts, a text over --max-chars characters or a body over --max-body-bytes is a 4xx
with a message, as are a wrong tensor name, datatype or shape and an empty batch.
It binds 127.0.0.1 unless told otherwise: kserve 0.21's ModelServer binds 0.0.0.0 with no option,
so the REST server is started here with kserve's own pieces and the host set.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from pathlib import Path

import numpy as np

LOOPBACK = "127.0.0.1"
LIMITS = {"max_texts": 64, "max_chars": 2000, "max_body_bytes": 1 << 20, "max_batch": 32, "max_delay_ms": 5.0}


def check_inputs(inputs: list, pairs: bool, limits: dict) -> tuple[list[str], list[str] | None]:
    """(texts, pairs) from v2 request inputs [(name, datatype, shape, data)], or ValueError naming the fault."""
    want = {"text", "text_pair"} if pairs else {"text"}
    got = {name: (dtype, shape, data) for name, dtype, shape, data in inputs}
    if set(got) != want or len(inputs) != len(want):
        raise ValueError(f"inputs must be named {sorted(want)}, got {[i[0] for i in inputs]}")
    out = {}
    for name, (dtype, shape, data) in got.items():
        if dtype != "BYTES":
            raise ValueError(f"input {name!r}: datatype must be BYTES, got {dtype!r}")
        values = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in np.ravel(data).tolist()]
        if list(shape) != [len(values)] or not all(isinstance(v, str) for v in values):
            raise ValueError(f"input {name!r}: shape must be [n] for n strings, got shape {list(shape)}")
        if not values:
            raise ValueError(f"input {name!r}: empty batch")
        if len(values) > limits["max_texts"]:
            raise ValueError(f"input {name!r}: {len(values)} texts, over the limit of {limits['max_texts']}")
        if (longest := max(map(len, values))) > limits["max_chars"]:
            raise ValueError(f"input {name!r}: a text of {longest} characters, over the limit of {limits['max_chars']}")
        out[name] = values
    if pairs and len(out["text"]) != len(out["text_pair"]):
        raise ValueError(f"{len(out['text'])} texts but {len(out['text_pair'])} text_pairs")
    return out["text"], out.get("text_pair")


class Batcher:
    """Gathers concurrent requests into model calls of at most max_batch texts, one call at a time."""

    def __init__(self, run, max_batch: int, max_delay_s: float):
        self.run, self.max_batch, self.max_delay_s = run, max_batch, max_delay_s
        self.queue: asyncio.Queue | None = None
        self.task = None  # kept: the loop holds only a weak reference to a task
        self.calls = 0

    async def submit(self, texts: list[str], pairs: list[str] | None) -> np.ndarray:
        if self.queue is None:  # created in the server's event loop
            self.queue = asyncio.Queue()
            self.task = asyncio.get_running_loop().create_task(self._loop())
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, pairs, fut))
        return await fut

    async def _loop(self):
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.max_delay_s
            while sum(len(b[0]) for b in batch) < self.max_batch and (left := deadline - loop.time()) > 0:
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            try:
                logits = await loop.run_in_executor(None, self.run, [t for b in batch for t in b[0]],
                                                    None if batch[0][1] is None else [p for b in batch for p in b[1]])
            except Exception as e:  # every waiting request gets the error, the loop goes on
                for *_, fut in batch:
                    if not fut.done():  # a client that went away cancelled its future
                        fut.set_exception(e)
                continue
            self.calls += 1
            start = 0
            for b_texts, _, fut in batch:
                if not fut.done():
                    fut.set_result(logits[start:start + len(b_texts)])
                start += len(b_texts)


def make_model(bundle_path: Path, name: str, limits: dict, threads: int | None):
    import kserve
    from kserve.errors import InvalidInput
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

    from deploy.runner import Bundle

    class BundleModel(kserve.Model):
        def load(self) -> bool:
            self.bundle = Bundle(bundle_path, threads=threads)
            self.pairs = "text_pair" in self.bundle.input_names or self.bundle.manifest.get("pairs", False)
            self.batcher = Batcher(lambda t, p: self.bundle.logits(t, p, limits["max_batch"]), limits["max_batch"],
                                   limits["max_delay_ms"] / 1000)
            self.ready = True
            return self.ready

        def get_input_types(self):
            return [{"name": n, "datatype": "BYTES", "shape": [-1]} for n in (("text", "text_pair") if self.pairs
                                                                            else ("text",))]

        def get_output_types(self):
            k = len(self.bundle.labels or [None])
            return [{"name": "logits", "datatype": "FP32", "shape": [-1, k]}] + (
                [{"name": "label", "datatype": "BYTES", "shape": [-1]}] if self.bundle.labels else [])

        async def predict(self, payload, headers=None, response_headers=None):
            if not isinstance(payload, InferRequest):  # kserve also routes v1 (:predict) bodies here, as dicts
                raise InvalidInput("this server speaks the v2 protocol: POST /v2/models/<name>/infer")
            try:
                texts, pairs = check_inputs([(i.name, i.datatype, i.shape, i.data) for i in payload.inputs],
                                            self.pairs, limits)
            except ValueError as e:
                raise InvalidInput(str(e)) from None
            logits = await self.batcher.submit(texts, pairs)
            outputs = [InferOutput("logits", list(logits.shape), "FP32", logits)]
            if self.bundle.labels:
                labels = [a["label"] for a in self.bundle.answers(logits)]
                outputs.append(InferOutput("label", [len(labels)], "BYTES", labels))
            return InferResponse(payload.id or str(uuid.uuid4()), self.name, outputs)

    return BundleModel(name)


def body_limit(app, max_bytes: int):
    """ASGI middleware: a body over max_bytes gets 413, whether it declares its length or is chunked.
    The body is read (at most max_bytes + one chunk) before the app sees it, then replayed."""
    async def reply(send, status: int, message: str):
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps({"error": message}).encode()})

    async def middleware(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and not length.isdigit():
            return await reply(send, 400, f"bad content-length {length[:40]!r}")
        if length is not None and int(length) > max_bytes:
            return await reply(send, 413, f"request body over the limit of {max_bytes} bytes")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client went away: nothing to answer
            chunks.append(message.get("body", b""))
            size, more = size + len(chunks[-1]), message.get("more_body", False)
            if size > max_bytes:
                return await reply(send, 413, f"request body over the limit of {max_bytes} bytes")
        body = b"".join(chunks)

        async def replay():
            return {"type": "http.request", "body": body, "more_body": False}

        return await app(scope, replay, send)

    return middleware


def serve(bundle: Path, name: str, host: str, port: int, limits: dict, threads: int | None) -> None:
    """kserve's REST server for one model, bound to `host` (see the module docstring for why not ModelServer.start)."""
    from kserve import model_server as ms
    from kserve.protocol.rest.server import RESTServer

    server = ms.ModelServer(http_port=port, enable_grpc=False, workers=1)
    model = make_model(bundle, name, limits, threads)
    model.load()
    server.register_model(model)
    rest = RESTServer(ms.FASTAPI_APP_IMPORT_STRING, server.dataplane, server.model_repository_extension, port)
    rest.config.host = host
    rest.config.app = body_limit(ms.app, limits["max_body_bytes"])
    server.servers.append(rest.start())
    server.setup_event_loop()
    server.register_signal_handler()
    asyncio.run(server._serve())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.server", description=__doc__.split("\n")[0])
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
    from deploy.runner import verify

    name = args.name or verify(args.bundle).get("model", args.bundle.name)
    serve(args.bundle, name, args.host, args.port, {k: getattr(args, k) for k in LIMITS}, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
