"""Choose a student's structure for a speed target, from a measured latency table (pipeline.training.latency).

Pure functions on the table's rows. The cost model: time(shape) = fixed + the sum of its layers' costs,
a layer's cost interpolated bilinearly on the table's grid of head counts x FFN widths. The search tries
every layer count, head count and FFN width (a multiple of 64, or the full width) and keeps the structure
that meets every target with as little removed as possible: the most layers first, then the most encoder
weights. Layers go last because a dropped layer cost far more accuracy than the same weights slimmed in
width: on MRPC, distilled at 50% of the encoder's weights, 3 of 6 layers lost 5.5 points and half of every
layer's heads and FFN gained 0.7 (one seed each, docs/results.md "Compression sweep"), at about the same speed.
Heads and FFN keep fractions within a factor of BALANCE of each other: the slimmed students measured
(the sweep's slim points) kept both in one proportion, and nothing measured says that a one-head layer
with a wide FFN distils well, though it keeps more weights.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace

import numpy as np

FFN_STEP = 64  # kept FFN widths: multiples of this (OpenVINO's sparse kernel and AMX tiles want 64)
BALANCE = 2.0


class PlanError(ValueError):
    """No structure meets the targets, or the table cannot predict one."""


@dataclass(frozen=True)
class CostModel:
    """Per shape name ("b32xs128"): the fixed part and the per-layer cost on the (heads x FFN) grid."""

    base: dict
    fixed: dict
    heads: list  # grid head counts
    ffns: list  # grid FFN widths
    layer: dict  # shape -> array [len(heads), len(ffns)] of per-layer ms
    correction: dict | None = None  # shape -> measured / predicted for students, from timing a planned one

    def layer_ms(self, shape: str, heads: int, ffn: int) -> float:
        """Bilinear in (heads, ffn) between grid points (clamped at the edges)."""
        grid = self.layer[shape]
        along_ffn = [np.interp(ffn, self.ffns, row) for row in grid]
        return float(np.interp(heads, self.heads, along_ffn))

    def predict(self, shape: str, layers: list[dict]) -> float:
        return self.fixed[shape] + sum(self.layer_ms(shape, l["heads"], l["ffn"]) for l in layers)

    def speedup(self, shape: str, layers: list[dict]) -> float:
        factor = (self.correction or {}).get(shape, 1.0)
        return self.predict(shape, self.teacher_layers()) / (self.predict(shape, layers) * factor)

    def teacher_layers(self) -> list[dict]:
        return [{"heads": self.base["heads"], "ffn": self.base["ffn"]}] * self.base["layers"]


def _grid_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if not r.get("check")]


def _fixed(rows: list[dict], shape: str, grid_layers: int) -> float:
    """The fixed part, from each width timed at one layer and at the grid's layer count (the median)."""
    at = {(r["layers"], r["heads"], r["ffn"]): r["ms"][shape] for r in _grid_rows(rows)}
    pairs = [
        (t1, at[(grid_layers, h, f)]) for (n, h, f), t1 in at.items() if n == 1 and (grid_layers, h, f) in at
    ]
    if not pairs:
        raise PlanError(f"latency table has no width timed at 1 and {grid_layers} layers at {shape}")
    return float(np.median([t1 - (tn - t1) / (grid_layers - 1) for t1, tn in pairs]))


def cost_model(table: dict) -> CostModel:
    base, rows = table["key"]["base"], _grid_rows(table["rows"])
    grid_layers = max(r["layers"] for r in rows)
    heads = sorted({r["heads"] for r in rows if r["layers"] == grid_layers})
    ffns = sorted({r["ffn"] for r in rows if r["layers"] == grid_layers})
    at = {(r["heads"], r["ffn"]): r["ms"] for r in rows if r["layers"] == grid_layers}
    if missing := [(h, f) for h in heads for f in ffns if (h, f) not in at]:
        raise PlanError(f"latency table has no {grid_layers}-layer timing for (heads, FFN) {missing[:3]}")
    shapes = sorted({s for r in rows for s in r["ms"]})
    fixed = {s: _fixed(rows, s, grid_layers) for s in shapes}
    layer = {
        s: np.array([[(at[(h, f)][s] - fixed[s]) / grid_layers for f in ffns] for h in heads]) for s in shapes
    }
    return CostModel(base, fixed, heads, ffns, layer)


def checks(model: CostModel, table: dict) -> list[dict]:
    """The table's check rows (mixed shapes, the full model): measured against predicted."""
    out = []
    for r in table["rows"]:
        if not r.get("check"):
            continue
        layers = [{"heads": r["heads"], "ffn": r["ffn"]}] * r["layers"]
        for s, ms in r["ms"].items():
            pred = model.predict(s, layers)
            out.append(
                {
                    "layers": r["layers"],
                    "heads": r["heads"],
                    "ffn": r["ffn"],
                    "shape": s,
                    "measured_ms": ms,
                    "predicted_ms": round(pred, 4),
                    "error": round(pred / ms - 1, 4),
                }
            )
    return out


def kept_weights(base: dict, layers: list[dict]) -> int:
    """Encoder Linear weights a structure keeps (heads keep their size, hidden // heads)."""
    h, head = base["hidden"], base["hidden"] // base["heads"]
    return sum(4 * h * head * l["heads"] + 2 * h * l["ffn"] for l in layers)


def balanced(base: dict, heads: int, ffn: int) -> bool:
    ratio = (heads / base["heads"]) / (ffn / base["ffn"])
    return 1 / BALANCE <= ratio <= BALANCE


def widths(base: dict) -> list[int]:
    return sorted({*range(FFN_STEP, base["ffn"], FFN_STEP), base["ffn"]})


def search(model: CostModel, targets: dict, layer_counts: list[int] | None = None) -> dict:
    """The structure with the most layers, then the most kept weights, whose predicted speed-up meets
    every target.

    targets: shape name -> minimum speed-up over the full model. layer_counts: the layer counts allowed
    (None: 1 to the base's). Raises PlanError naming the best reachable speed-up when none meets them."""
    base = model.base
    counts = layer_counts or list(range(1, base["layers"] + 1))
    best, fastest = None, None
    for n in counts:
        for h in range(1, base["heads"] + 1):
            for f in widths(base):
                if not balanced(base, h, f):
                    continue
                layers = [{"heads": h, "ffn": f}] * n
                speed = {s: model.speedup(s, layers) for s in targets}
                slack = min(speed[s] / t for s, t in targets.items())
                if fastest is None or slack > fastest[0]:
                    fastest = (slack, n, h, f, speed)
                rank = (n, kept_weights(base, layers))
                if slack >= 1 and (best is None or rank > (best["layers"], best["kept_weights"])):
                    best = {
                        "layers": n,
                        "heads": h,
                        "ffn": f,
                        "kept_weights": kept_weights(base, layers),
                        "predicted_speedup": {s: round(v, 3) for s, v in speed.items()},
                    }
    if best is None:
        _, n, h, f, speed = fastest
        got = ", ".join(f"{v:.2f}x at {s} (asked {targets[s]})" for s, v in speed.items())
        raise PlanError(
            f"no structure reaches the speed-up asked: the fastest this model allows "
            f"({n} layers x {h} heads x FFN {f}) is predicted at {got}; the fixed part (embeddings, "
            f"classifier, runtime) caps it. Lower prune.speedup / prune.latency_speedup, or use a "
            f"smaller base model"
        )
    best["kept_fraction"] = round(best["kept_weights"] / kept_weights(base, model.teacher_layers()), 4)
    return best


def teacher_ms(table: dict) -> dict:
    """The full model's measured times per shape (the table's own check row)."""
    b = table["key"]["base"]
    row = next(
        (
            r
            for r in table["rows"]
            if r.get("check") and (r["layers"], r["heads"], r["ffn"]) == (b["layers"], b["heads"], b["ffn"])
        ),
        None,
    )
    if row is None:
        raise PlanError("latency table has no timing of the full model")
    return row["ms"]


def verified_search(model: CostModel, targets: dict, counts, time_fn, full_ms: dict, tries: int = 3) -> dict:
    """search(), then time the chosen structure itself (time_fn(layers) -> ms per shape) against the full
    model's measured times. A miss corrects the model by measured / predicted for that structure and
    searches again. On MiniLM the uncorrected grid was optimistic for a 1-head student by 13-19% (bench,
    AMX Xeon). Returns the structure with `verified`: every timing, predicted against measured."""
    tried = []
    for _ in range(tries):
        best = search(model, targets, counts)
        layers = [{"heads": best["heads"], "ffn": best["ffn"]}] * best["layers"]
        ms = time_fn(layers)
        measured = {s: round(full_ms[s] / ms[s], 3) for s in targets}
        tried.append(
            {
                "layers": best["layers"],
                "heads": best["heads"],
                "ffn": best["ffn"],
                "predicted_speedup": best["predicted_speedup"],
                "measured_speedup": measured,
            }
        )
        if all(measured[s] >= t for s, t in targets.items()):
            return {**best, "verified": tried}
        model = replace(model, correction={s: ms[s] / model.predict(s, layers) for s in targets})
    raise PlanError(
        f"no structure met the speed targets {targets} when timed after {tries} tries: {tried}; "
        "lower prune.speedup / prune.latency_speedup"
    )


def keep_layers(n_student: int, n_teacher: int) -> list[int]:
    """Which pre-trained layers a student with n_student layers starts from: evenly spread, the last kept."""
    return sorted({round((i + 1) * n_teacher / n_student) - 1 for i in range(n_student)})


def structure(best: dict, base: dict, layers: list[int] | None = None) -> dict:
    """What prune does to reach a searched shape: which pre-trained layers it keeps, and INC's head and
    FFN-channel targets. INC rounds the pruned head and channel counts down from a target that lands a
    hair under k/n, and slimming rounds kept channels up to a multiple of 32 (FFN 256 shipped as 288 on
    MiniLM), so both targets sit just above the plan's."""
    heads_cut = (base["heads"] - best["heads"]) / base["heads"]
    return {
        **best,
        "keep_layers": layers or keep_layers(best["layers"], base["layers"]),
        "mha_sparsity": round(heads_cut + 1e-4, 6) if heads_cut else 0.0,
        "ffn_sparsity": round(1 - best["ffn"] / base["ffn"] + 1e-4, 6) if best["ffn"] < base["ffn"] else 0.0,
    }


def check_reached(shapes: list[dict], want: dict, round_multiplier: int = 32) -> str | None:
    """Why a slimmed student's per-layer shapes miss the planned structure, or None. INC may spread heads
    and channels unevenly over layers (global scope): the totals must match, FFN within slimming's rounding."""
    n = len(shapes)
    heads, ffn = sum(s["heads"] for s in shapes), sum(s["ffn"] for s in shapes)
    if n != want["layers"]:
        return f"{n} layers, planned {want['layers']}"
    if heads != n * want["heads"]:
        return f"{heads} heads in all, planned {n} x {want['heads']}"
    if not n * want["ffn"] <= ffn <= n * (want["ffn"] + round_multiplier):
        return f"{ffn} FFN channels in all, planned {n} x {want['ffn']}"
    return None


def speed_targets(p: dict, deploy: dict) -> tuple[dict, dict]:
    """(shapes by role, minimum speed-up by shape name) from prune's targets and deploy's shapes."""
    shapes = {"throughput": list(deploy["shape"]), "latency": [1, deploy["latency_tokens"]]}
    asked = ((shapes["throughput"], p["speedup"]), (shapes["latency"], p["latency_speedup"]))
    return shapes, {f"b{b}xs{s}": t for (b, s), t in asked if t}


def for_params(p: dict, params_path: str, threads: int, acc=None) -> dict | None:
    """With prune.speedup or prune.latency_speedup: the structure that meets them on this CPU, from the
    cached (or now measured) latency table; None without a speed target. Raises PlanError when no
    structure can, before anything trains. Under data parallelism (`acc`) one process times."""
    if not (p["speedup"] or p["latency_speedup"]):
        return None
    from transformers import AutoConfig

    from pipeline.core.common import read_json
    from pipeline.core.models import start_model
    from pipeline.core.params import load_section, upstream_dir
    from pipeline.training import latency

    meta = read_json(upstream_dir("data", params_path) / "meta.json")
    config = AutoConfig.from_pretrained(start_model(meta), trust_remote_code=False)
    shapes, targets = speed_targets(p, load_section("deploy", params_path))
    main_process = acc is None or acc.is_main_process
    if main_process:  # one process times; the others read its table
        table = latency.load_or_measure(config, p["speed_backend"], list(shapes.values()), threads)
    if acc is not None:
        acc.wait_for_everyone()
    if not main_process:
        table = latency.load_or_measure(config, p["speed_backend"], list(shapes.values()), threads)
    model = cost_model(table)
    counts = [len(p["student_layers"])] if p["student_layers"] else None

    def time_fn(layers):
        return latency.time_structure(config, p["speed_backend"], list(shapes.values()), threads, layers)

    best = verified_search(model, targets, counts, time_fn, teacher_ms(table))
    return {
        **structure(best, model.base, p["student_layers"]),
        "targets": targets,
        "shapes": shapes,
        "backend": p["speed_backend"],
        "table": {k: table[k] for k in ("key", "cached")},
        "table_checks": checks(model, table),
        "cost_model": model,
    }


def main(params_path: str = "params.yaml") -> dict | None:
    """What prune would build for its speed targets on this CPU (timing the table if it is not cached):
    python -m pipeline.training.plan [params.yaml]"""
    from pipeline.core.common import set_threads
    from pipeline.core.params import load_section

    p = load_section("prune", params_path)
    planned = for_params(p, params_path, set_threads(p["threads"]))
    if planned is None:
        print("prune.speedup and prune.latency_speedup are both null: the student's structure is prune's own")
        return None
    for c in planned["table_checks"]:
        print(
            f"[plan] check {c['layers']} x {c['heads']} x {c['ffn']} at {c['shape']}: measured "
            f"{c['measured_ms']} ms, predicted {c['predicted_ms']} ms ({c['error']:+.1%})"
        )
    for v in planned["verified"]:
        print(
            f"[plan] timed {v['layers']} x {v['heads']} x {v['ffn']}: predicted {v['predicted_speedup']}, "
            f"measured {v['measured_speedup']}"
        )
    print(
        f"[plan] {planned['layers']} layers {planned['keep_layers']} x {planned['heads']} heads x FFN "
        f"{planned['ffn']}: {planned['kept_fraction']:.1%} of the encoder's weights, predicted "
        f"{planned['predicted_speedup']} against {planned['targets']}"
    )
    return planned


if __name__ == "__main__":
    main(*sys.argv[1:])
