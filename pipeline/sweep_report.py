"""Stage `sweep_report`: the compression sweep on one page.

    python -m pipeline.sweep_report [params.yaml]      # the last stage of `dvc repro sweeps/dvc.yaml`

Inputs: every point's metrics in sweep.out_dir/<point>/metrics/ (written by `python -m pipeline.sweep
<point>`), the base run's metrics/teacher.json and, when present, metrics/{eval,bench}.json for the
dense teacher's score per backend and its speed. Output (sweep_report.out_dir): sweep.md
(SparseBERT's table plus the winner per level), accuracy_vs_remaining.png,
throughput_vs_remaining.png, plots/*.json for `dvc plots`, and history.jsonl, one line per report,
which is how a report knows which points this run recomputed.
Rendering lives in pipeline/reporting/sweep_render.py.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from pipeline.core.common import (
    DETAILS,
    Timer,
    atomic_dir,
    details_path,
    read_json,
    write_json,
    write_metrics,
)
from pipeline.core.params import load_section, metrics_dir
from pipeline.reporting.render import TPUT
from pipeline.reporting.sweep_render import (
    front,
    plot_accuracy,
    plot_data,
    plot_throughput,
    point_row,
    render,
    table_order,
    teacher_row,
    winners,
)

POINT_FILES = ("sweep", "prune", "eval", "bench")


def load_point(folder: Path, name: str, overrides: dict, params_path: str) -> dict:
    rerun = f"run it: python -m pipeline.sweep {name} {params_path}"
    missing = [f for f in POINT_FILES if not details_path(folder / "metrics", f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"sweep_report: point {name!r} has no {', '.join(f'{m}.json' for m in missing)} in "
            f"{folder / 'metrics' / DETAILS}; {rerun}"
        )
    docs = {f: read_json(details_path(folder / "metrics", f)) for f in POINT_FILES}
    if docs["sweep"]["prune"] != overrides:
        raise ValueError(
            f"sweep_report: point {name!r} in {folder} was run with {docs['sweep']['prune']}, but "
            f"sweep.points.{name} is now {overrides}; {rerun}"
        )
    return docs


def check_shape(p: dict, bench: dict) -> None:
    """The report's backends and shape must be ones every point's bench times, or its columns are empty."""
    if bad := [b for b in p["backends"] if b not in bench["backends"]]:
        raise ValueError(
            f"sweep_report.backends has {bad}, which the points' bench does not time "
            f"(bench.backends after sweep.overrides: {bench['backends']})"
        )
    batch, seq = p["shape"]
    if batch not in bench["batch_sizes"] or seq not in bench["seq_lens"] or 1 not in bench["streams"]:
        raise ValueError(
            f"sweep_report.shape = {p['shape']} is not in the points' bench grid (batch_sizes "
            f"{bench['batch_sizes']}, seq_lens {bench['seq_lens']}, streams {bench['streams']} with 1)"
        )


def read_history(path: Path) -> list[dict]:
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    )


def cost(points: dict[str, dict], history: list[dict], now: datetime) -> dict:
    """What the sweep costs in full, and what this run spent: points whose results are not the ones the
    previous report saw (each report records every point's finished_at)."""
    seen = history[-1].get("finished_at", {}) if history else {}
    finished = {n: d["sweep"]["finished_at"] for n, d in points.items()}
    fresh = sorted(n for n, at in finished.items() if seen.get(n) != at)
    first = min((points[n]["sweep"]["started_at"] for n in fresh), default=None)
    return {
        "at": now.isoformat(timespec="microseconds"),
        "points": len(points),
        "recomputed": fresh,
        "points_wall_time_s_total": round(sum(d["sweep"]["wall_time_s"] for d in points.values()), 1),
        "recomputed_wall_time_s": round(sum(points[n]["sweep"]["wall_time_s"] for n in fresh), 1),
        "this_run_wall_time_s": round((now - datetime.fromisoformat(first)).total_seconds(), 1)
        if first
        else 0.0,
        "finished_at": finished,
    }


def cost_line(c: dict) -> str:
    return (
        f"{c['points']} points cost {c['points_wall_time_s_total']:.0f} s of stage wall time in all; this run "
        f"recomputed {len(c['recomputed'])} ({', '.join(c['recomputed']) or 'none'}) in "
        f"{c['this_run_wall_time_s']:.0f} s wall, from the first recomputed point's start to this report."
    )


def main(params_path: str = "params.yaml") -> dict:
    p = load_section("sweep_report", params_path)
    sweep = load_section("sweep", params_path)
    check_shape(p, {**load_section("bench", params_path), **sweep["overrides"].get("bench", {})})
    backends, shape = p["backends"], p["shape"]
    with Timer() as t:
        points = {
            n: load_point(Path(sweep["out_dir"]) / n, n, o, params_path) for n, o in sweep["points"].items()
        }
        base = metrics_dir(params_path)
        teacher = read_json(details_path(base, "teacher"))
        base_bench, base_eval = (
            read_json(details_path(base, s)) if details_path(base, s).is_file() else None
            for s in ("bench", "eval")
        )
        first = next(iter(points.values()))
        metrics = first["eval"]["metrics"]
        rows = [teacher_row(teacher, metrics, base_bench, base_eval, backends, shape)]
        rows += sorted((point_row(n, d, backends, shape) for n, d in points.items()), key=table_order)
        history_path = Path(p["out_dir"]) / "history.jsonl"
        history = read_history(history_path)
        c = cost(points, history, datetime.now(timezone.utc))
        ctx = {
            "task": first["eval"]["task"],
            "metrics": metrics,
            "backends": backends,
            "shape": shape,
            "threads": first["bench"]["threads"],
            "cpu": first["bench"]["hardware"]["cpu"],
            "front": front(rows, backends),
            "cost": cost_line(c),
        }
        wins = winners(rows, backends[0])
        with atomic_dir(p["out_dir"]) as out:
            (out / "sweep.md").write_text(render(rows, wins, ctx))
            plot_accuracy(
                rows,
                out / "accuracy_vs_remaining.png",
                "MCC" if "mcc" in metrics else "mean of " + ", ".join(metrics),
            )
            plot_throughput(rows, out / "throughput_vs_remaining.png", backends, shape, ctx["front"])
            for name, records in plot_data(rows, backends).items():
                write_json(out / "plots" / name, records)
            (out / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in [*history, c]))
    for w in wins:
        print(
            f"[sweep] {w['level']:>4}: most accurate {w['most_accurate']} ({w['score']:.4f}), "
            f"fastest on {w['backend']} {w['fastest']} ({w[TPUT]} seq/s)"
        )
    print(f"[sweep] {cost_line(c)}")
    return write_metrics(
        "sweep_report",
        {
            "task": ctx["task"],
            "shape": shape,
            "backends": backends,
            "rows": rows,
            "winners": wins,
            "pareto_front": sorted(f"{k[0]} {k[1]}" for k in ctx["front"]),
            **{k: v for k, v in c.items() if k != "finished_at"},
            "wall_time_s": round(t.seconds, 2),
        },
        None,
        base,
        ("points_wall_time_s_total", "recomputed_wall_time_s", "wall_time_s"),
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
