"""Load test of a bundle behind pipeline.serving.server: N concurrent v2 infer requests over loopback, each
answer checked against the bundle runner's answer for the same text.

    python -m tools.diagnostics.loadtest bundles/student --rows data/tokenized/eval.jsonl --requests 1000 [--out F]

The server runs in its own process on a free 127.0.0.1 port and is stopped at the end. Traffic goes
only to loopback, the count is fixed and the whole run is bounded by --timeout-s. Records: errors
(must be 0), mismatches against the runner, throughput and p50/p99 latency per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.serving.server import LOOPBACK as HOST


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def request_body(text: str, pair: str | None) -> dict:
    inputs = [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]
    if pair is not None:
        inputs.append({"name": "text_pair", "shape": [1], "datatype": "BYTES", "data": [pair]})
    return {"inputs": inputs}


def start_server(bundle: Path, name: str, port: int, threads: int | None, timeout_s: float, log):
    """The server in its own process; its log goes to a file (a pipe nobody reads would fill and stall it)."""
    import httpx

    cmd = [
        sys.executable,
        "-m",
        "pipeline.serving.server",
        str(bundle),
        "--name",
        name,
        "--host",
        HOST,
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(cmd + (["--threads", str(threads)] if threads else []), stdout=log, stderr=log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"pipeline.serving.server exited with {proc.returncode}: {log.read()[-2000:]}")
        try:
            if httpx.get(f"http://{HOST}:{port}/v2/health/ready", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise TimeoutError(f"pipeline.serving.server not ready on {HOST}:{port} within {timeout_s} s")


async def fire(url: str, rows: list, concurrency: int, timeout_s: float) -> list[dict]:
    """aiohttp, not httpx: httpx's connection pool spent most of a 1,000-connection run on its own
    bookkeeping (p50 27 s against 2.7 s here, same server), which measured the client, not the server."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout
    ) as session:

        async def one(row):
            t0 = time.perf_counter()
            try:
                async with session.post(url, json=request_body(*row)) as r:
                    ok = r.status == 200
                    body = await r.json() if ok else (await r.text())[:200]
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                ok, body = False, f"{type(e).__name__}: {e}"
            return {"ok": ok, "seconds": time.perf_counter() - t0, "body": body}

        return await asyncio.wait_for(asyncio.gather(*(one(r) for r in rows)), timeout_s)


def logits_of(body: dict) -> np.ndarray:
    out = next(o for o in body["outputs"] if o["name"] == "logits")
    return np.asarray(out["data"], np.float32).reshape(out["shape"])


def run(
    bundle: Path,
    rows: list,
    requests: int,
    concurrency: int,
    threads: int | None = None,
    timeout_s: float = 300,
    atol: float = 1e-2,
) -> dict:
    from pipeline.serving.runner import Bundle

    rows = [rows[i % len(rows)] for i in range(requests)]
    runner = Bundle(bundle, threads=threads)
    pairs = [p for _, p in rows] if rows[0][1] is not None else None
    want = runner.logits([t for t, _ in rows], pairs)
    name, port = runner.manifest.get("model", "model"), free_port()
    del runner
    with tempfile.TemporaryFile("w+") as log:
        proc = start_server(bundle, name, port, threads, 60, log)
        try:
            t0 = time.perf_counter()
            results = asyncio.run(
                fire(f"http://{HOST}:{port}/v2/models/{name}/infer", rows, concurrency, timeout_s)
            )
            wall = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(30)
    errors = [r["body"] for r in results if not r["ok"]]
    got = [(logits_of(r["body"])[0], w) for r, w in zip(results, want) if r["ok"]]
    diff = max((float(np.abs(g - w).max()) for g, w in got), default=0.0)
    # The label is the answer; logits move by float noise with the padded width of the batch a request joined.
    label_mismatch = sum(int(g.argmax() != w.argmax()) for g, w in got) if want.shape[-1] > 1 else 0
    mismatch = sum(1 for g, w in got if not np.allclose(g, w, atol=atol))
    ms = np.array([r["seconds"] for r in results]) * 1000
    return {
        "requests": requests,
        "concurrency": concurrency,
        "errors": len(errors),
        "error_examples": errors[:3],
        "mismatches_vs_runner": mismatch,
        "label_mismatches": label_mismatch,
        "logits_max_abs_diff": round(diff, 6),
        "atol": atol,
        "wall_s": round(wall, 3),
        "throughput_req_per_s": round(requests / wall, 2),
        "latency_ms_p50": round(float(np.percentile(ms, 50)), 2),
        "latency_ms_p99": round(float(np.percentile(ms, 99)), 2),
        "host": HOST,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tools.diagnostics.loadtest", description=__doc__.split("\n")[0]
    )
    ap.add_argument("bundle", type=Path)
    ap.add_argument(
        "--rows",
        type=Path,
        required=True,
        help="JSONL with text (and text_pair) per line, e.g. the data stage's eval.jsonl",
    )
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=None, help="requests in flight (default: all of them)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--timeout-s", type=float, default=300)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    rows = [
        (r["text"], r.get("text_pair"))
        for r in map(json.loads, filter(str.strip, args.rows.read_text().splitlines()))
    ]
    from pipeline.core.common import cpu_info, write_json

    result = {
        **run(
            args.bundle, rows, args.requests, args.concurrency or args.requests, args.threads, args.timeout_s
        ),
        "cpu": cpu_info(),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(args.out, result)
    return 0 if result["errors"] == result["mismatches_vs_runner"] == result["label_mismatches"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
