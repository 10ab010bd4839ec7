"""Which format a bundle ships in: the fastest backend bench measured on this CPU among those eval
found within its tolerance, or the one the user names.

On a Xeon with AMX, OpenVINO INT8 ran the demo student at 1.8x onnxruntime INT8; on an AVX2-only
EPYC it ran at half of it and slower than OpenVINO FP32 (docs/results.md), so no
format is right everywhere and the choice is made from the bench of the machine it ran on.
"""

from __future__ import annotations

from pipeline.core.registry import TARGETS as REGISTRY_TARGETS

# target -> the bench/eval backend that measured it, the files it is built from, and whether OpenVINO's
# sparse-weight kernel is on; declared in pipeline.core.registry
TARGETS = {
    name: {"backend": b.name, "runtime": b.runtime, "source": b.artifact, "sparse": b.sparse}
    for name, b in REGISTRY_TARGETS.items()
}
CHOICES = ("auto", *TARGETS)


class TargetError(ValueError):
    """No format can be chosen from the bench and eval results at hand."""


def candidates(model: str, shape: tuple[int, int], bench: list[dict], evals: list[dict]) -> list[dict]:
    """Every target with its measured throughput at `shape` (one stream) and whether eval flagged it."""
    out = []
    for name, t in TARGETS.items():
        cell = next(
            (
                r
                for r in bench
                if r["model"] == model
                and r["backend"] == t["backend"]
                and r["streams"] == 1
                and (r["batch"], r["seq_len"]) == tuple(shape)
            ),
            None,
        )
        ev = next((r for r in evals if r["model"] == model and r["backend"] == t["backend"]), None)
        out.append(
            {
                "target": name,
                "backend": t["backend"],
                "throughput_seq_per_s": cell and cell["throughput_seq_per_s"],
                "latency_ms_p50": cell and cell["latency_ms_p50"],
                "unstable": bool(cell and cell.get("unstable")),
                "evaluated": ev is not None,
                "within_tolerance": ev is not None and not ev["flagged"],
            }
        )
    return out


def choose(requested: str, model: str, shape: tuple[int, int], bench: list[dict], evals: list[dict]) -> dict:
    """{"target", "requested", "reason", "candidates"}; `auto` needs at least one benched, unflagged target."""
    if requested not in CHOICES:
        raise TargetError(f"deploy.target {requested!r}; allowed: {', '.join(CHOICES)}")
    cands = candidates(model, shape, bench, evals)
    if requested != "auto":
        c = next(c for c in cands if c["target"] == requested)
        why = "asked for" + (
            "" if c["within_tolerance"] else " (eval did not find it within tolerance: see candidates)"
        )
        return {"target": requested, "requested": requested, "reason": why, "candidates": cands}
    ok = [c for c in cands if c["throughput_seq_per_s"] and c["within_tolerance"]]
    if not ok:
        raise TargetError(
            f"deploy.target auto for {model}: no target was both benched at {list(shape)} and within "
            f"eval's tolerance; add backends {[t['backend'] for t in TARGETS.values()]} to "
            f"bench.backends and eval.backends, or name a deploy.target"
        )
    best = max(ok, key=lambda c: c["throughput_seq_per_s"])
    return {
        "target": best["target"],
        "requested": "auto",
        "candidates": cands,
        "reason": f"fastest within eval's tolerance at b{shape[0]}xs{shape[1]}: "
        f"{best['throughput_seq_per_s']} seq/s on {best['backend']}",
    }


def fastest_ov_int8(cands: list[dict]) -> str:
    """openvino-int8 or openvino-int8-dense, whichever bench measured faster (the sparse kernel when
    neither was timed): what an OpenVINO server gets when the bundle itself is not OpenVINO INT8."""
    timed = [
        c
        for c in cands
        if c["target"] in ("openvino-int8", "openvino-int8-dense") and c["throughput_seq_per_s"]
    ]
    return max(timed, key=lambda c: c["throughput_seq_per_s"])["target"] if timed else "openvino-int8"
