"""Stage `eval`: the dev-set metric of every model on every backend and precision.

    python -m pipeline.eval            # reads the `eval` section of params.yaml

One metric code path (pipeline.core.tasks.compute_metrics) for all backends. A backend whose score
differs from the PyTorch FP32 score of the same model by more than eval.tolerance is flagged,
and fails the stage when eval.fail_on_drift is true. Output: metrics/eval.json.
"""

from __future__ import annotations

import gc
import sys

import numpy as np

from pipeline.core.common import Timer, set_threads, write_metrics
from pipeline.core.params import load_section, metrics_dir, upstream_dir

REFERENCE = "torch-fp32"


class DriftError(RuntimeError):
    pass


def drift_flags(results: list[dict], tolerance: float) -> list[str]:
    """Set delta_vs_torch / delta_vs_teacher on each row and return a line per drifting backend."""
    ref = {r["model"]: r["score"] for r in results if r["backend"] == REFERENCE}
    teacher = ref.get("teacher")
    flags = []
    for r in results:
        r["delta_vs_torch"] = round(r["score"] - ref[r["model"]], 6) if r["model"] in ref else None
        r["delta_vs_teacher"] = round(r["score"] - teacher, 6) if teacher is not None else None
        r["flagged"] = r["delta_vs_torch"] is not None and abs(r["delta_vs_torch"]) > tolerance
        if r["flagged"]:
            flags.append(
                f"{r['model']} on {r['backend']}: score {r['score']:.4f} differs from {REFERENCE} "
                f"by {r['delta_vs_torch']:+.4f} (tolerance {tolerance})"
            )
    return flags


def main(params_path: str = "params.yaml") -> dict:
    p = load_section("eval", params_path)
    if REFERENCE not in p["backends"]:
        raise ValueError(f"eval.backends must include {REFERENCE!r}: every backend is judged against it")
    data_dir = upstream_dir("data", params_path)
    threads = set_threads(p["threads"])
    from pipeline.runtime.backends import load, model_paths
    from pipeline.core.tasks import compute_metrics
    from pipeline.core.tokens import feeds, load_inputs

    meta, _, dev = load_inputs(data_dir)
    batches = feeds(dev, p["batch_size"])
    results = []
    with Timer() as t:
        for model in p["models"]:
            paths = model_paths(model, params_path)
            for backend in p["backends"]:
                runner = load(backend, paths, threads)
                with Timer() as tb:
                    logits = np.concatenate([runner.run(b) for b in batches])
                scores = compute_metrics(logits, dev.labels, meta["metrics"], meta["problem_type"])
                results.append(
                    {
                        "model": model,
                        **runner.info,
                        **runner.kernels(),
                        **scores,
                        "eval_s": round(tb.seconds, 2),
                    }
                )
                print(
                    f"[eval] {model:8s} {backend:14s} score {scores['score']:.4f} ({runner.info['inference_precision']})"
                )
                del runner
                gc.collect()
    flags = drift_flags(results, p["tolerance"])
    metrics = write_metrics(
        "eval",
        {
            "task": meta["task"],
            "metrics": meta["metrics"],
            "examples": len(dev),
            "tolerance": p["tolerance"],
            "results": results,
            "flags": flags,
            "flagged": len(flags),
            "wall_time_s": round(t.seconds, 2),
        },
        threads,
        metrics_dir(params_path),
        ("flagged", "wall_time_s"),
    )
    for f in flags:
        print(f"[eval] FLAGGED: {f}")
    if flags and p["fail_on_drift"]:
        raise DriftError(
            f"{len(flags)} backend(s) drifted past eval.tolerance (metrics/eval.json written): "
            + "; ".join(flags)
            + ". Set eval.fail_on_drift: false to accept."
        )
    return metrics


if __name__ == "__main__":
    main(*sys.argv[1:])
