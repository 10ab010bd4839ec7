"""A benchmark harness a performance engineer would trust (after OpenVINO's sync_benchmark.py):
fixed shapes, warm-up, a loop bounded by count and time, percentiles, one backend at a time, and
OpenVINO's own benchmark_app on the same IR and shape as a cross-check.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BASELINE = {"model": "teacher", "backend": "torch-fp32"}  # every speed is also a ratio to this
GAP = 0.15  # benchmark_app vs our harness: a larger relative gap is reported
UNSTABLE = 0.15  # timing rounds of one cell that disagree by more are flagged


def synthetic_feed(batch: int, seq: int, vocab: int, seed: int) -> dict:
    """Exactly `seq` real tokens per row (no padding), so every backend sees the same work."""
    rng = np.random.default_rng(seed)
    low = 1000 if vocab > 2000 else 5  # skip BERT's special and unused ids where the vocab allows it
    ids = rng.integers(low, vocab, (batch, seq), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP] in BERT vocabularies
    return {
        "input_ids": ids,
        "attention_mask": np.ones((batch, seq), np.int64),
        "token_type_ids": np.zeros((batch, seq), np.int64),
    }


def time_loop(fn, warmup: int, min_iters: int, max_seconds: float, max_iters: int = 10_000) -> list[float]:
    """Per-call seconds after warm-up; runs at least min_iters and stops once max_seconds have passed."""
    for _ in range(warmup):
        fn()
    out, start = [], time.perf_counter()
    while len(out) < min_iters or (time.perf_counter() - start < max_seconds and len(out) < max_iters):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def summarize(latencies: list[float], batch: int) -> dict:
    ms = np.asarray(latencies) * 1000
    return {
        "iterations": len(ms),
        "latency_ms_p50": round(float(np.percentile(ms, 50)), 3),
        "latency_ms_p90": round(float(np.percentile(ms, 90)), 3),
        "latency_ms_p99": round(float(np.percentile(ms, 99)), 3),
        "latency_ms_mean": round(float(ms.mean()), 3),
        "throughput_seq_per_s": round(float(batch * len(ms) / (ms.sum() / 1000)), 2),
    }


def async_streams(
    compiled, feed: dict, streams: int, warmup: int, min_iters: int, max_seconds: float, batch: int
) -> dict:
    """OpenVINO throughput mode: `streams` requests in flight; latency per request, throughput overall."""
    import openvino as ov

    names = {i.get_any_name() for i in compiled.inputs}
    feed = {k: v for k, v in feed.items() if k in names}
    queue = ov.AsyncInferQueue(compiled, streams)
    lat = []
    # The request's own latency: a wall clock started before start_async would also count the wait
    # for a free request.
    queue.set_callback(lambda req, _: lat.append(req.latency / 1000))
    for _ in range(warmup * streams):
        queue.start_async(feed)
    queue.wait_all()
    lat.clear()
    start = time.perf_counter()
    while time.perf_counter() - start < max_seconds or len(lat) < max(streams, min_iters):
        queue.start_async(feed)
    queue.wait_all()
    elapsed = time.perf_counter() - start
    out = summarize(lat, batch)
    out["throughput_seq_per_s"] = round(batch * len(lat) / elapsed, 2)
    return out


def benchmark_app(xml: Path, config: dict, batch: int, seq: int, threads: int, seconds: int) -> dict:
    """OpenVINO's benchmark_app, sync API, one stream, same properties and the same dynamic-shape IR
    (-data_shape, not -shape, which would reshape it static). Its FPS counts inferences (batches).

    Never raises: a missing binary, a crash, a timeout or output without a throughput comes back as
    {"error": why, "command": ...}, which bench records in its crosscheck rows and the report shows;
    a cross-check must not cost the timings it checks."""
    shape = ",".join(f"{n}[{batch},{seq}]" for n in ("input_ids", "attention_mask", "token_type_ids"))
    props = {
        k: v
        for k, v in config.items()
        if k not in ("INFERENCE_NUM_THREADS", "NUM_STREAMS", "PERFORMANCE_HINT")
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"CPU": props}, f)
    exe = Path(sys.executable).with_name("benchmark_app")
    cmd = [
        str(exe),
        "-m",
        str(xml),
        "-d",
        "CPU",
        "-api",
        "sync",
        "-hint",
        "none",
        "-nstreams",
        "1",
        "-nthreads",
        str(threads),
        "-t",
        str(seconds),
        "-data_shape",
        shape,
        "-load_config",
        f.name,
    ]
    failed = {"command": " ".join(cmd[1:])}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    except FileNotFoundError:
        return {"error": f"benchmark_app not found at {exe} (it comes with the openvino package)", **failed}
    except OSError as e:
        return {"error": f"benchmark_app at {exe} could not start: {e}", **failed}
    except subprocess.TimeoutExpired:
        return {"error": f"benchmark_app ran past {seconds + 120} s and was stopped", **failed}
    finally:
        Path(f.name).unlink()
    fps = re.search(r"Throughput:\s*([\d.]+)\s*FPS", proc.stdout)
    if proc.returncode or not fps:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"benchmark_app exited {proc.returncode} without a throughput: {last[0]}", **failed}
    median = re.search(r"Median:\s*([\d.]+)\s*ms", proc.stdout)
    return {
        "fps": float(fps.group(1)),
        "seq_per_s": round(float(fps.group(1)) * batch, 2),
        "latency_ms_median": float(median.group(1)) if median else None,
        "command": " ".join(cmd[1:]),
    }


def settled(latencies: list[float]) -> bool:
    """A round whose middle half lies within UNSTABLE of its median needs no repeat: a burst of noise
    on the machine would have widened it."""
    q1, med, q3 = np.percentile(latencies, [25, 50, 75])
    return bool((q3 - q1) / med <= UNSTABLE)


def stability(rounds: list[list[float]]) -> dict:
    """Median latency of each round run; a cell is flagged when its rounds disagree by more than
    UNSTABLE, or when it had one round only and that round was not settled."""
    medians = [float(np.median(r)) * 1000 for r in rounds]
    spread = max(medians) / min(medians)
    unstable = spread > 1 + UNSTABLE or (len(rounds) == 1 and not settled(rounds[0]))
    return {
        "round_p50_ms": [round(m, 3) for m in medians],
        "rounds_run": len(rounds),
        "unstable": bool(unstable),
    }
