"""Stage `sweep`: one point of the compression sweep (a `foreach` stage in sweeps/dvc.yaml).

    python -m pipeline.sweep <point> [params.yaml] [--stages export,compile,...]   # one point
    python -m pipeline.sweep <point> --params-only     # only its params.yaml (stage sweep_params)
    dvc repro sweeps/dvc.yaml                           # every point, then the sweep report

A point is a named set of `prune` overrides (a method and a remaining-weight level) in
sweep.points; sweep.overrides adds settings shared by every point (shorter training, fewer
backends). The point gets its own folder, sweep.out_dir/<point>/, with a generated params.yaml:
its data and teacher sections point at the base run's outputs, so the cached tokenized data and
teacher are reused, never retrained, while prune, export, compile, eval and bench write inside the
folder. Each stage runs in its own process (timings in a long-lived process are distorted), and
metrics/sweep.json there records what the point is and what each stage cost. In DVC,
`sweep_params@<point>` writes the params file and `sweep@<point>` depends on it, so a base change
that leaves a point's params unchanged (a key every point overrides) reruns nothing.
"""

from __future__ import annotations

import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import yaml

from pipeline.core.common import details_path, read_json, write_metrics
from pipeline.core.params import ParamsError, load_section, validate, validated
from pipeline.core.runs import relocate, run_stage, write_params
from pipeline.core.schema import SWEEP_STAGES as STAGES

SHARED = ("data", "teacher")  # read from the base run, never recomputed by a point


def method(prune: dict) -> str:
    """How a point compresses, named the way the report groups it."""
    if prune.get("speedup") or prune.get("latency_speedup"):
        return "speed target"
    layers = "layer-drop" if prune["student_layers"] else ""
    if prune["target_sparsity"] == 0:
        return layers or "dense"
    pattern = prune["pattern"]
    kind = (
        "structured+slim"
        if pattern == "channelx1"
        else "unstructured"
        if pattern == "1x1"
        else f"N:M {pattern}"
        if ":" in pattern
        else f"block {pattern}"
    )
    return f"{layers} + {kind}" if layers else kind


def point_doc(doc: dict, name: str, base_dir: Path, point_dir: Path) -> dict:
    """The full params document of one point, every section validated before anything runs."""
    sweep = validated(doc, "sweep")
    if name not in sweep["points"]:
        raise ParamsError(
            f"params: sweep.points has no point {name!r}; defined: {', '.join(sweep['points'])}"
        )
    doc = {s: validated(doc, s) for s in (*SHARED, *STAGES, "deploy")}  # the base first: its errors name it
    out = {s: relocate(s, doc[s], base_dir, point_dir) for s in SHARED}
    # a speed target is met at deploy's shapes (pipeline.training.plan): the base file's, stated or default
    out["deploy"] = relocate("deploy", doc["deploy"], base_dir, point_dir)
    for section in STAGES:
        merged = {
            **relocate(section, doc[section], base_dir, base_dir, inside=True),
            **sweep["overrides"].get(section, {}),
        }
        if section == "prune":  # a point states its own speed target; the base run's is not inherited
            merged.update({"speedup": None, "latency_speedup": None, **sweep["points"][name]})
        try:
            out[section] = validate(section, merged)
        except ParamsError as e:
            raise ParamsError(
                f"{e} (in sweep point {name!r}: sweep.overrides.{section} / sweep.points.{name})"
            ) from e
    return out


def prepare(point: str, params_path: str) -> tuple[dict, Path, dict]:
    """Validate everything and write the point's params.yaml: (sweep section, point folder, point doc)."""
    p = load_section("sweep", params_path)  # validates names and override keys
    with open(params_path) as f:
        doc = yaml.safe_load(f)
    point_dir = Path(p["out_dir"]) / point
    pdoc = point_doc(doc, point, Path(params_path).parent, point_dir)
    write_params(point_dir / "params.yaml", pdoc, "sweep")
    return p, point_dir, pdoc


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def main(point: str, params_path: str = "params.yaml", stages: tuple = STAGES) -> dict:
    if unknown := [s for s in stages if s not in STAGES]:
        raise ValueError(f"sweep: unknown stage(s) {unknown}; allowed: {', '.join(STAGES)}")
    p, point_dir, pdoc = prepare(point, params_path)
    metrics = point_dir / "metrics"
    previous = read_json(details_path(metrics, "sweep")) if details_path(metrics, "sweep").is_file() else {}
    if stages == STAGES:
        shutil.rmtree(metrics, ignore_errors=True)  # no mix of this run's and an older run's results
        previous = {}
    started = now()
    stage_s = {
        **previous.get("stage_wall_time_s", {}),
        **{s: run_stage(s, point_dir / "params.yaml", point) for s in stages},
    }
    prune = read_json(metrics / "prune.json")
    print(f"[sweep] {point}: {sum(stage_s.values()):.0f} s", flush=True)
    return write_metrics(
        "sweep",
        {
            "point": point,
            "method": method(pdoc["prune"]),
            "prune": p["points"][point],
            "encoder_remaining_weights": prune["encoder_remaining_weights"],
            "model_remaining_weights": prune.get("model_remaining_weights"),
            "started_at": started,
            "finished_at": now(),
            "stage_wall_time_s": stage_s,
            "wall_time_s": round(sum(stage_s.values()), 2),
        },
        pdoc["prune"]["threads"],
        metrics,
        ("encoder_remaining_weights", "model_remaining_weights", "wall_time_s"),
    )


def cli(argv: list[str]) -> dict:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m pipeline.sweep", description="Run one sweep point.")
    ap.add_argument("point")
    ap.add_argument("params", nargs="?", default="params.yaml")
    ap.add_argument("--stages", default=",".join(STAGES), help="a subset, to finish a point by hand")
    ap.add_argument(
        "--params-only", action="store_true", help="only write its params.yaml (stage sweep_params)"
    )
    a = ap.parse_args(argv)
    if a.params_only:
        return prepare(a.point, a.params)[2]
    return main(a.point, a.params, tuple(a.stages.split(",")))


if __name__ == "__main__":
    cli(sys.argv[1:])
