"""Where a prune step's time goes, and what the teacher cache and bf16 buy, measured in one process.

    python -m pipeline.training.step_profile [params.yaml] [--steps 12] [--warmup 3] [--out FILE]

Reads the `prune` section (its data and teacher must exist), builds teacher and student as prune does,
attaches INC, and times the same training batches in each setup: `live` (the teacher runs at every
step, kasp before the cache), `cache` (its outputs computed once), and `cache+bf16` (bf16 autocast,
only where the CPU has bf16 kernels). Each setup starts from the same student and reports the median
step after warm-up; speedups are ratios of those medians. The breakdown splits the cached fp32 step
into student forward + loss, backward, and optimizer + INC masks; the live teacher's forward is the
live step minus the cached one. Benchmark, not test: run it on a quiet machine; the CPU is recorded.
"""

from __future__ import annotations

import argparse
import copy
import statistics

import numpy as np

from pipeline.core.common import cpu_info, set_threads, write_json
from pipeline.core.params import load_section, upstream_dir
from pipeline.training import device, inc, student as st
from pipeline.training.distill import layer_map
from pipeline.training.loop import PHASES, Progress, length_grouped_batches, make_optimizer, train_step
from pipeline.training.schedule import lr_lambda
from pipeline.training.teacher_cache import TeacherCache


def time_setup(student0, ds, batches, loss_fn, p: dict, precision: str, warmup: int, total: int) -> dict:
    """Median phase and step times (ms) over `batches` after `warmup` steps, from a copy of student0."""
    acc = device.accelerator(
        device.resolve({**p, "device": "cpu", "precision": precision, "allow_fallback": False})
    )
    model = copy.deepcopy(student0).train()
    opt, sched = make_optimizer(model, p, total, lambda n: lr_lambda(p, n, pruning=True))
    model, opt = acc.prepare(model, opt)
    pruner = inc.Pruner(model, opt, p, total)
    rows, timing = [], Progress().timing
    for idx in batches:
        rows.append({})
        train_step(model, ds, idx, loss_fn, opt, sched, p["max_grad_norm"], timing, acc, phases=rows[-1])
    pruner.detach()
    rows = rows[warmup:]
    med = {f"{k}_ms_p50": round(statistics.median(r[k] for r in rows), 2) for k in PHASES}
    step = statistics.median(sum(r.values()) for r in rows)
    return {
        **med,
        "step_ms_p50": round(step, 2),
        "samples_per_s": round(p["batch_size"] * 1000 / step, 2),
        "timed_steps": len(rows),
    }


def profile(params_path: str, steps: int, warmup: int) -> dict:
    from pipeline.core.models import load_trained
    from pipeline.core.tokens import load_inputs

    p = load_section("prune", params_path)
    threads = set_threads(p["threads"])
    meta, train, _ = load_inputs(upstream_dir("data", params_path))
    teacher_dir = upstream_dir("teacher", params_path)
    teacher = load_trained(teacher_dir).eval().requires_grad_(False)
    student = st.build_student(p, meta, teacher_dir, teacher)
    batches = length_grouped_batches(train.lengths, p["batch_size"], p["seed"])[: warmup + steps]
    ds = train.subset(np.concatenate(batches))  # only these rows: the cache below stays small
    batches = np.split(np.arange(len(ds)), np.cumsum([len(b) for b in batches])[:-1])
    mapping = layer_map(student.config.num_hidden_layers, teacher.config.num_hidden_layers)
    t_hidden, t_att = st.teacher_layers(p, mapping)
    regression = meta["problem_type"] == "regression"
    cache = TeacherCache.build(teacher, ds, t_hidden, att_layers=t_att)
    live, cached = (st.make_loss(teacher, p, regression, mapping, c) for c in (None, cache))
    total = len(batches) * 1000  # these steps are the first of a long run: no mask update falls in them
    setups = {"live": (live, "fp32"), "cache": (cached, "fp32")}
    isa = cpu_info()["isa"]
    if any(f in isa for f in device.BF16_FLAGS):
        setups["cache+bf16"] = (cached, "bf16")
    res = {
        name: time_setup(student, ds, batches, fn, p, prec, warmup, total)
        for name, (fn, prec) in setups.items()
    }
    base = res["live"]["step_ms_p50"]
    return {
        "cpu": cpu_info()["cpu"],
        "isa": isa,
        "threads": threads,
        "batch_size": p["batch_size"],
        "loss_weights": st.loss_weights(p),
        "setups": res,
        "teacher_forward_ms_p50": round(base - res["cache"]["step_ms_p50"], 2),
        "speedup_vs_live": {k: round(base / v["step_ms_p50"], 3) for k, v in res.items()},
        "bf16": "measured"
        if "cache+bf16" in res
        else f"not measured: no {' or '.join(device.BF16_FLAGS)} on this CPU",
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("params", nargs="?", default="params.yaml")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", default=None, help="also write the result as JSON here")
    a = ap.parse_args(argv)
    result = profile(a.params, a.steps, a.warmup)
    if a.out:
        write_json(a.out, result)
    print({k: result[k] for k in ("cpu", "threads", "teacher_forward_ms_p50", "speedup_vs_live")})
    return result


if __name__ == "__main__":
    main()
