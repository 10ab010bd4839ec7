"""Stage `bench`: latency and throughput of every model on every backend over a grid of shapes.

    python -m pipeline.bench           # reads the `bench` section of params.yaml

One backend is loaded at a time, threads are fixed, and the PyTorch FP32 dense teacher is timed
in the same run so every figure is also a ratio to it. Each result records what actually ran.
Student OpenVINO INT8 cells listed in bench.crosscheck_shapes are re-timed by benchmark_app; a gap
over 15% is reported. Output: metrics/bench.json.
"""

from __future__ import annotations

import gc
import itertools
import sys
from functools import partial

from pipeline.core.common import Timer, cpu_info, seed_everything, set_threads, write_metrics
from pipeline.core.params import load_section, metrics_dir
from pipeline.timing.harness import BASELINE, GAP


def add_speedups(results: list[dict]) -> None:
    base = {
        (r["batch"], r["seq_len"]): r["throughput_seq_per_s"]
        for r in results
        if r["model"] == BASELINE["model"] and r["backend"] == BASELINE["backend"] and r["streams"] == 1
    }
    for r in results:
        b = base.get((r["batch"], r["seq_len"]))
        r["speedup_vs_baseline"] = round(r["throughput_seq_per_s"] / b, 3) if b else None


def versus_teacher(results: list[dict]) -> dict:
    """What pruning bought: per backend timed for both, per shape, the teacher's p50 over the student's
    (the same runtime and precision, so only the model differs; at a fixed batch throughput is the
    inverse of latency). {"ov-int8": {"b32xs128": 3.1, ...}, ...}, one stream."""
    p50 = {
        (r["model"], r["backend"], r["batch"], r["seq_len"]): r["latency_ms_p50"]
        for r in results
        if r["streams"] == 1
    }
    out = {}
    for (model, backend, b, s), student in p50.items():
        teacher = p50.get(("teacher", backend, b, s))
        if model == "student" and teacher:
            out.setdefault(backend, {})[f"b{b}xs{s}"] = round(teacher / student, 3)
    return out


def versus_torch(results: list[dict]) -> dict:
    """The student's best backend per shape against the PyTorch FP32 teacher (speedup_vs_baseline)."""
    out = {}
    for r in results:
        if r["model"] == "student" and r["streams"] == 1 and r.get("speedup_vs_baseline"):
            key = f"b{r['batch']}xs{r['seq_len']}"
            if r["speedup_vs_baseline"] > out.get(key, {}).get("x", 0):
                out[key] = {"x": r["speedup_vs_baseline"], "backend": r["backend"]}
    return {k: v["x"] for k, v in out.items()}, {k: v["backend"] for k, v in out.items()}


def bench_backend(model: str, backend: str, paths, p: dict, threads: int, vocab: int, bar) -> list[dict]:
    from pipeline.runtime.backends import load
    from pipeline.timing.harness import (
        async_streams,
        settled,
        stability,
        summarize,
        synthetic_feed,
        time_loop,
    )

    rows = []
    for streams in sorted(set(p["streams"])):
        if streams > 1 and not backend.startswith("ov-"):
            continue
        runner = load(backend, paths, threads, streams)
        shapes = list(itertools.product(p["batch_sizes"], p["seq_lens"]))
        feeds = {s: synthetic_feed(*s, vocab, p["seed"]) for s in shapes}
        if streams == 1:
            # Rounds interleave the shapes, so a burst of noise on a shared machine hits one round of a
            # cell, not the whole cell; latencies are pooled and the round medians kept to judge stability.
            # A cell whose rounds so far are all settled is not timed again: on a quiet machine most big
            # cells need one round, and they are most of bench's time.
            rounds = {s: [] for s in shapes}
            for k in range(p["rounds"]):
                for s in [s for s in shapes if k == 0 or not all(map(settled, rounds[s]))]:
                    rounds[s].append(
                        time_loop(
                            partial(runner.run, feeds[s]), p["warmup_iters"], p["min_iters"], p["max_seconds"]
                        )
                    )
            cells = {
                s: {**summarize([x for r in rounds[s] for x in r], s[0]), **stability(rounds[s])}
                for s in shapes
            }
        else:
            cells = {
                s: async_streams(
                    runner.compiled,
                    feeds[s],
                    streams,
                    p["warmup_iters"],
                    p["min_iters"],
                    p["max_seconds"] * p["rounds"],
                    s[0],
                )
                for s in shapes
            }
        for (batch, seq), figures in cells.items():
            rows.append(
                {"model": model, **runner.info, **runner.kernels(), "batch": batch, "seq_len": seq, **figures}
            )
            bar.update(1)
        del runner
        gc.collect()
    return rows


def crosscheck(results: list[dict], p: dict, threads: int, paths) -> list[dict]:
    from pipeline.runtime import openvino as dov
    from pipeline.timing.harness import benchmark_app
    from pipeline.core.common import read_json

    out = []
    config = read_json(paths.compiled_dir / "compile_config.json")
    for batch, seq in p["crosscheck_shapes"]:
        ours = next(
            (
                r
                for r in results
                if r["model"] == "student"
                and r["backend"] == "ov-int8"
                and r["batch"] == batch
                and r["seq_len"] == seq
                and r["streams"] == 1
            ),
            None,
        )
        if ours is None:
            continue
        ba = benchmark_app(
            paths.compiled_dir / "int8.xml", config, batch, seq, threads, p["crosscheck_seconds"]
        )
        row = {
            "model": "student",
            "backend": "ov-int8",
            "batch": batch,
            "seq_len": seq,
            "ours_seq_per_s": ours["throughput_seq_per_s"],
            "benchmark_app": ba,
            "sparse_rate": config.get(dov.SPARSE_RATE_KEY),
        }
        if "seq_per_s" in ba:
            row["benchmark_app_seq_per_s"] = ba["seq_per_s"]
            row["ratio"] = round(ours["throughput_seq_per_s"] / ba["seq_per_s"], 3)
            row["gap_over_15pct"] = abs(row["ratio"] - 1) > GAP
        else:  # recorded in the row (row["benchmark_app"]["error"]) and shown by the report; bench goes on
            print(
                f"[bench] benchmark_app cross-check at b{batch} s{seq} failed: {ba['error']}", file=sys.stderr
            )
        out.append(row)
    return out


def main(params_path: str = "params.yaml") -> dict:
    p = load_section("bench", params_path)
    bad = [s for s in p["crosscheck_shapes"] if len(s) != 2]
    if bad:
        raise ValueError(f"bench.crosscheck_shapes {bad}: each must be [batch, sequence_length]")
    seed_everything(p["seed"])
    threads = set_threads(p["threads"])
    from tqdm.auto import tqdm

    from pipeline.runtime.backends import model_paths
    from pipeline.core.models import read_config

    # The baseline is always timed in this run, even when its model is not in bench.models.
    plan = [
        (m, p["backends"] if m in p["models"] else [BASELINE["backend"]])
        for m in sorted(set(p["models"]) | {BASELINE["model"]}, key=lambda m: m != BASELINE["model"])
    ]
    cells = sum(
        len(p["batch_sizes"]) * len(p["seq_lens"]) * sum(s == 1 or b.startswith("ov-") for s in p["streams"])
        for _, backends in plan
        for b in backends
    )
    results = []
    with Timer() as t, tqdm(total=cells, desc="bench", mininterval=2) as bar:
        for model, backends in plan:
            paths = model_paths(model, params_path)
            vocab = read_config(paths.torch_dir)["vocab_size"]
            for backend in backends:
                results += bench_backend(model, backend, paths, p, threads, vocab, bar)
        add_speedups(results)
        checks = (
            crosscheck(results, p, threads, model_paths("student", params_path))
            if "student" in p["models"]
            else []
        )
    for c in checks:
        if c.get("gap_over_15pct"):
            print(
                f"[bench] cross-check gap: ours {c['ours_seq_per_s']} vs benchmark_app "
                f"{c['benchmark_app_seq_per_s']} seq/s at b{c['batch']} s{c['seq_len']}"
            )
    vs_torch, vs_torch_backend = versus_torch(results)
    return write_metrics(
        "bench",
        {
            "speedup_vs_teacher_x": versus_teacher(results),
            "speedup_vs_torch_fp32_teacher_x": vs_torch,
            "speedup_vs_torch_fp32_teacher_backend": vs_torch_backend,
            "cpu": cpu_info()["cpu"],
            "hardware": cpu_info(),
            "threads": threads,
            "baseline": BASELINE,
            "grid": {"batch_sizes": p["batch_sizes"], "seq_lens": p["seq_lens"], "streams": p["streams"]},
            "results": results,
            "crosscheck": checks,
            "unstable_cells": sum(bool(r.get("unstable")) for r in results),
            "wall_time_s": round(t.seconds, 2),
        },
        threads,
        metrics_dir(params_path),
        (
            "speedup_vs_teacher_x",
            "speedup_vs_torch_fp32_teacher_x",
            "threads",
            "unstable_cells",
            "wall_time_s",
        ),
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
