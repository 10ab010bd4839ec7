"""Stage `report`: one page a person reads instead of five metrics files.

    python -m pipeline.report          # reads the `report` section of params.yaml

Inputs: metrics/{teacher,prune,compile,eval,bench}.json. Output (report.out_dir, replaced whole):
report.md (what ran and where, the accuracy / size / latency / throughput / speedup table, drift
flags, sparse-kernel coverage, the benchmark_app cross-check), accuracy_vs_throughput.png,
throughput.png, and plots/{accuracy_vs_throughput,throughput}.json for `dvc plots`;
metrics/report.json with the headline ratios. Rendering lives in pipeline/reporting/render.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pipeline.core.common import Timer, atomic_dir, details_path, read_json, write_json, write_metrics
from pipeline.core.params import load_section, metrics_dir
from pipeline.reporting.render import (
    NA,
    TPUT,
    bench_cells,
    bench_value,
    build_context,
    crosscheck_error,
    plot_accuracy_vs_throughput,
    plot_data,
    plot_throughput_by_backend,
    ratio,
    render_markdown,
    render_table,
    table_rows,
)
from pipeline.reporting.render_deploy import render_deploy
from pipeline.reporting.render_gain import headline as gain_headline, render_gain

INPUTS = (
    "teacher",
    "prune",
    "compile",
    "eval",
    "bench",
    "deploy",
)  # metrics/details/<stage>.json, by that stage
REQUIRED = {
    "teacher": ("score",),
    "prune": ("score", "encoder_linear_sparsity"),
    "compile": ("models",),
    "eval": ("task", "metrics", "results"),
    "bench": ("results",),
    "deploy": ("models", "repositories"),
}
ROW_KEYS = {
    "eval": ("model", "backend", "precision", "score"),
    "bench": ("model", "backend", "batch", "seq_len", "streams", "latency_ms_p50", TPUT),
}
MODEL_KEYS = ("sparse_fc_layers", "fc_layers", "fc_reasons", "sizes", "compile_config")


HEADLINE = (
    "student_vs_teacher_x",
    "student_vs_teacher_x_latency_shape",
    "student_vs_teacher_gzip_fraction",
    "student_ov_int8_speedup_x",
    "student_ov_int8_speedup_x_latency_shape",
    "sparse_on_off_x",
    "sparse_on_off_x_latency_shape",
    "flagged_backends",
    "crosscheck_failed",
    "rows_not_as_asked",
    "unstable_bench_cells",
    "wall_time_s",
)


class ReportInputError(ValueError):
    """A metrics file the report needs is malformed; the message names the file and the key."""


def _missing(doc: dict, keys) -> list[str]:
    return [k for k in keys if k not in doc]


def check_doc(stage: str, path: Path, doc) -> None:
    """Fail on a malformed input now, naming file and key, rather than with a KeyError mid-render."""
    rerun = f"rerun stage `{stage}` (dvc repro {stage})"
    if not isinstance(doc, dict):
        raise ReportInputError(f"report: {path} holds a {type(doc).__name__}, not an object; {rerun}")
    if bad := _missing(doc, REQUIRED[stage]):
        raise ReportInputError(f"report: {path} lacks key(s) {bad}; {rerun}")
    if stage in ROW_KEYS:
        if not isinstance(doc["results"], list) or not doc["results"]:
            raise ReportInputError(f"report: {path}: 'results' is empty or not a list; {rerun}")
        keys = ROW_KEYS[stage] + (tuple(doc["metrics"]) if stage == "eval" else ())
        for i, row in enumerate(doc["results"]):
            if bad := _missing(row, keys):
                raise ReportInputError(f"report: {path}: results[{i}] lacks key(s) {bad}; {rerun}")
    if stage == "compile":
        for name, model in doc["models"].items():
            if bad := _missing(model, MODEL_KEYS):
                raise ReportInputError(f"report: {path}: models.{name} lacks key(s) {bad}; {rerun}")


def load_inputs(folder: Path) -> dict:
    """stage -> its full metrics record (metrics/details/<stage>.json); every file is checked before
    any rendering starts."""
    absent = [s for s in INPUTS if not details_path(folder, s).is_file()]
    if absent:
        raise FileNotFoundError(
            "report: missing "
            + "; ".join(f"{details_path(folder, s)} (written by stage `{s}`: dvc repro {s})" for s in absent)
        )
    docs = {}
    for stage in INPUTS:
        path = details_path(folder, stage)
        try:
            docs[stage] = read_json(path)
        except json.JSONDecodeError as e:
            raise ReportInputError(f"report: {path} is not valid JSON ({e}); rerun stage `{stage}`") from e
        check_doc(stage, path, docs[stage])
    return docs


def _num(v):
    return None if v == NA else round(v, 4)


def headline(rows: list[dict], bench: dict, latency_shape, throughput_shape) -> dict:
    """The figures a person quotes: student ov-int8 vs the PyTorch FP32 teacher, and sparse kernel on vs off."""
    student = next((r for r in rows if r["model"] == "student" and r["backend"] == "ov-int8"), {})
    cells = bench_cells(bench)

    def on_off(shape):
        return ratio(
            bench_value(cells, "student", "ov-int8", tuple(shape), TPUT),
            bench_value(cells, "student", "ov-int8-dense", tuple(shape), TPUT),
        )

    return {
        "student_ov_int8_speedup_x": _num(student.get("speedup_x", NA)),
        "student_ov_int8_speedup_x_latency_shape": _num(student.get("speedup_x_latency_shape", NA)),
        "sparse_on_off_x": _num(on_off(throughput_shape)),
        "sparse_on_off_x_latency_shape": _num(on_off(latency_shape)),
    }


def write_report(out: Path, rows: list[dict], ctx: dict, docs: dict, shapes: tuple) -> None:
    """report.md opens with what pruning bought (after its title), then the full table and checks."""
    lat, throughput_shape = shapes
    bench, deploy = docs["bench"], docs["deploy"]
    title, rest = render_markdown(rows, ctx).split("\n", 1)
    gain = render_gain(rows, deploy, docs["compile"], lat, throughput_shape, docs["prune"].get("vocab"))
    (out / "report.md").write_text("\n".join([title, "", *gain]) + rest + "\n".join(render_deploy(deploy)))
    plot_accuracy_vs_throughput(rows, out / "accuracy_vs_throughput.png", throughput_shape)
    plot_throughput_by_backend(bench, out / "throughput.png")
    for name, records in plot_data(rows, bench).items():
        write_json(out / "plots" / name, records)


def main(params_path: str = "params.yaml") -> dict:
    p = load_section("report", params_path)
    lat, tput = p["latency_shape"], p["throughput_shape"]
    with Timer() as t:
        docs = load_inputs(metrics_dir(params_path))
        args = [docs[s] for s in INPUTS if s != "deploy"]
        rows, ctx = table_rows(*args, lat, tput), build_context(*args, lat, tput)
        for note in ctx["notes"] + [
            f"{r['model']} {r['backend']}: {m}" for r in rows for m in r["asked_vs_ran"]
        ]:
            print(f"[report] warning: {note}", file=sys.stderr)
        with atomic_dir(p["out_dir"]) as out:
            write_report(out, rows, ctx, docs, (lat, tput))
    print(render_table(rows, ctx))
    return write_metrics(
        "report",
        {
            "rows": len(rows),
            "latency_shape": lat,
            "throughput_shape": tput,
            **gain_headline(rows, docs["deploy"]),
            **headline(rows, docs["bench"], lat, tput),
            "flagged_backends": len(ctx["flags"]),
            "crosscheck_gaps_over_15pct": sum(bool(c.get("gap_over_15pct")) for c in ctx["crosscheck"]),
            "crosscheck_failed": sum(crosscheck_error(c) is not None for c in ctx["crosscheck"]),
            "rows_not_as_asked": sum(bool(r["asked_vs_ran"]) for r in rows),
            "unstable_bench_cells": len(ctx["unstable"]),
            "wall_time_s": round(t.seconds, 2),
        },
        None,
        metrics_dir(params_path),
        HEADLINE,
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
