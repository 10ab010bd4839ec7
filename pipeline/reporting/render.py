"""Rendering for the `report` stage: the comparison table, report.md, PNG plots and DVC plot records.

Pure: every function takes the dicts that earlier stages wrote to metrics/ and returns text or
records, or writes one PNG. Reading params.yaml and metrics/ is pipeline/report.py's job. A number
the inputs do not hold is shown as "n/a", never estimated from a neighbouring cell.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core.registry import BACKENDS
from pipeline.reporting.labels import place_labels
from pipeline.reporting.ran import hardware, what_ran
from pipeline.timing.harness import BASELINE, GAP, UNSTABLE

NA = "n/a"
# the file whose size a backend's row shows (torch runs the weights of the FP32 ONNX), from the registry
SIZE_KEY = {name: b.size_key for name, b in BACKENDS.items()}
SPARSE = "sparse kernel"  # the fc_reasons key pipeline.runtime.openvino.fc_report gives layers on the sparse kernel
TPUT = "throughput_seq_per_s"
DPI = 110


def bench_cells(bench: dict) -> dict:
    """(model, backend, batch, seq_len) -> the bench row with the fewest streams.

    p50 latency only means "one request's latency" single-stream, so the table uses the lowest
    streams count measured (1 unless bench.streams leaves it out).
    """
    cells = {}
    for r in bench["results"]:
        key = (r["model"], r["backend"], r["batch"], r["seq_len"])
        if key not in cells or r["streams"] < cells[key]["streams"]:
            cells[key] = r
    return cells


def bench_value(cells: dict, model: str, backend: str, shape, field: str):
    row = cells.get((model, backend, *shape))
    value = row.get(field) if row else None
    return NA if value is None else value


def ratio(a, b):
    return NA if NA in (a, b) or not b else a / b


def _mb(n):
    return NA if n is None else n / 1e6


def table_rows(teacher, prune, compile_, eval_, bench, latency_shape, throughput_shape) -> list[dict]:
    """One row per (model, backend) that eval scored, in eval's order, with the precision and provider
    that ran (pipeline.reporting.ran), not the ones the backend's name asks for."""
    cells, base = bench_cells(bench), bench.get("baseline") or BASELINE
    lat, tput = tuple(latency_shape), tuple(throughput_shape)
    isa = hardware(bench).get("isa") or []
    rows = []
    for r in eval_["results"]:
        m, b = r["model"], r["backend"]
        model = compile_["models"].get(m, {})
        size = model.get("sizes", {}).get(SIZE_KEY.get(b), {})
        timed = [x for x in bench["results"] if (x["model"], x["backend"]) == (m, b)]
        speed = {
            shape: ratio(
                bench_value(cells, m, b, shape, TPUT),
                bench_value(cells, base["model"], base["backend"], shape, TPUT),
            )
            for shape in (lat, tput)
        }
        rows.append(
            {
                "model": m,
                "backend": b,
                **what_ran(r, timed, model, isa),
                **{k: r[k] for k in eval_["metrics"]},
                "score": r["score"],
                "delta_score_vs_teacher": r["score"] - teacher["score"],
                "encoder_sparsity": removed_weights(prune) if m == "student" else 0.0,
                "size_mb": _mb(size.get("bytes")),
                "size_gzip_mb": _mb(size.get("gzip_bytes")),
                "latency_ms_p50": bench_value(cells, m, b, lat, "latency_ms_p50"),
                TPUT: bench_value(cells, m, b, tput, TPUT),
                "speedup_x": speed[tput],
                "speedup_x_latency_shape": speed[lat],
                "flagged": bool(r.get("flagged")),
            }
        )
    return rows


def removed_weights(prune: dict) -> float:
    """Encoder Linear weights removed, zeroed or sliced away: the one axis for sparse and slimmed
    students (a slimmed matrix holds few zeros, yet most of its weights are gone)."""
    return 1 - prune.get("encoder_remaining_weights", 1 - prune["encoder_linear_sparsity"])


def _kernel_line(name: str, c: dict) -> str:
    others = ", ".join(f"{why}: {n}" for why, n in c["fc_reasons"].items() if why != SPARSE) or "none"
    return (
        f"{name}: {c['sparse_fc_layers']}/{c['fc_layers']} FC layers on the sparse INT8 kernel; "
        f"others: {others} (weight sparsity {c.get('weight_sparsity', 0):.2%}, "
        f"inference precision {c.get('inference_precision', NA)})"
    )


def build_context(teacher, prune, compile_, eval_, bench, latency_shape, throughput_shape) -> dict:
    """Everything around the table: what ran, where, and what to distrust."""
    env, hw = bench.get("env", {}), hardware(bench)
    grid = {(r["batch"], r["seq_len"]) for r in bench["results"]}
    notes = [
        f"report.{name} {list(shape)} was not benchmarked (bench grid: "
        f"{', '.join(f'b{b}×s{s}' for b, s in sorted(grid))}); its columns show n/a"
        for name, shape in (("latency_shape", latency_shape), ("throughput_shape", throughput_shape))
        if tuple(shape) not in grid
    ]
    flags = eval_.get("flags") or [
        f"{r['model']} {r['backend']}" for r in eval_["results"] if r.get("flagged")
    ]
    return {
        "task": eval_["task"],
        "metrics": list(eval_["metrics"]),
        "tolerance": eval_.get("tolerance"),
        "teacher_score": teacher["score"],
        "majority_score": teacher.get("baseline_score"),
        "pattern": prune.get("pattern", NA),
        "selection": {"teacher": teacher.get("selection", NA), "student": prune.get("selection", NA)},
        "calibration": (
            f"; the student's positive logit was shifted by {-c['logit_shift']:+.3f}, fitted on "
            f"{c['split_size']} held-out train rows"
        )
        if (c := prune.get("calibration"))
        else "",
        "target_sparsity": prune.get("target_sparsity"),
        "encoder_sparsity": removed_weights(prune),
        "hardware": hw,
        "threads": bench.get("threads"),
        "versions": env.get("versions", {}),
        "streams": sorted({r["streams"] for r in bench["results"]}),
        "baseline": bench.get("baseline") or BASELINE,
        "flags": flags,
        "crosscheck": bench.get("crosscheck", []),
        "kernels": [_kernel_line(n, c) for n, c in compile_["models"].items()],
        "unstable": [
            f"{r['model']} {r['backend']} b{r['batch']}×s{r['seq_len']}: round medians "
            f"{', '.join(f'{m:.2f}' for m in r.get('round_p50_ms', []))} ms"
            for r in bench["results"]
            if r.get("unstable")
        ],
        "latency_shape": list(latency_shape),
        "throughput_shape": list(throughput_shape),
        "notes": notes,
    }


def fmt(v, spec: str, suffix: str = "") -> str:
    return NA if v == NA or v is None else f"{v:{spec}}{suffix}"


def shape_label(shape) -> str:
    return f"b{shape[0]}×s{shape[1]}"


def render_table(rows: list[dict], ctx: dict) -> str:
    lat, tput = shape_label(ctx["latency_shape"]), shape_label(ctx["throughput_shape"])
    head = [
        "model",
        "backend",
        "precision ran",
        "provider ran",
        "asked vs ran",
        *ctx["metrics"],
        "score",
        "Δ score vs teacher",
        "encoder weights removed",
        "size MB (gzip MB)",
        f"p50 latency ms @{lat}",
        f"seq/s @{tput}",
        f"speedup @{tput}",
        f"speedup @{lat}",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r["model"],
            r["backend"] + (" **FLAGGED**" if r["flagged"] else ""),
            r["precision_ran"] or NA,
            r["provider_ran"] or NA,
            f"**{'; '.join(r['asked_vs_ran'])}**" if r["asked_vs_ran"] else "as asked",
            *(fmt(r[k], ".4f") for k in ctx["metrics"]),
            fmt(r["score"], ".4f"),
            fmt(r["delta_score_vs_teacher"], "+.4f"),
            fmt(r["encoder_sparsity"], ".1%"),
            f"{fmt(r['size_mb'], '.1f')} ({fmt(r['size_gzip_mb'], '.1f')})",
            fmt(r["latency_ms_p50"], ".2f"),
            fmt(r[TPUT], ".1f"),
            fmt(r["speedup_x"], ".2f", "x"),
            fmt(r["speedup_x_latency_shape"], ".2f", "x"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _what_ran(ctx: dict) -> list[str]:
    hw, isa = ctx["hardware"], ctx["hardware"].get("isa") or []
    amx = " ".join(f for f in isa if f.startswith("amx")) or "none"
    vnni = " ".join(f for f in isa if "vnni" in f) or "none"
    versions = ", ".join(f"{k} {v}" for k, v in ctx["versions"].items()) or NA
    base, score = ctx["baseline"], "MCC (GLUE's headline)" if "mcc" in ctx["metrics"] else "their mean"
    return [
        f"- Task: {ctx['task']} (dev set; metrics {', '.join(ctx['metrics'])}; score = {score}; "
        f"teacher score {ctx['teacher_score']:.4f}; always answering the majority class scores "
        f"{fmt(ctx['majority_score'], '.4f')})",
        f"- Student: pattern {ctx['pattern']}, target sparsity {fmt(ctx['target_sparsity'], '.0%')}, "
        f"encoder Linear weights removed (zeroed or sliced away): {ctx['encoder_sparsity']:.2%}",
        f"- Hardware: {hw.get('cpu')}, {hw.get('physical_cores')} physical cores / {hw.get('logical_cpus')} "
        f"logical; AMX: {amx}; VNNI: {vnni}; ISA flags: {' '.join(isa) or 'none'}",
        f"- Threads: {ctx['threads']} for every backend; OpenVINO streams measured: {ctx['streams']}",
        f"- Versions: {versions}",
        f"- Speedups are throughput ratios to {base['model']} {base['backend']} (dense PyTorch FP32) "
        f"at the same [batch, seq]",
    ]


def crosscheck_error(c: dict) -> str | None:
    """Why a cross-check row has no ratio: benchmark_app's error as bench recorded it (a string, or
    the last lines of its output in older bench.json files); None when it has one."""
    if "ratio" in c:
        return None
    err = c.get("benchmark_app", {}).get("error") or "bench.json records neither a ratio nor an error"
    return "; ".join(err) if isinstance(err, list) else str(err)


def _crosscheck(ctx: dict) -> list[str]:
    out = []
    for c in ctx["crosscheck"]:
        head = (
            f"{c['model']} {c['backend']} {shape_label((c['batch'], c['seq_len']))}: "
            f"ours {c['ours_seq_per_s']:.1f} seq/s"
        )
        if (err := crosscheck_error(c)) is not None:
            out.append(f"- **benchmark_app FAILED**: {head}; this cell is not cross-checked: {err}")
            continue
        line = f"{head}, benchmark_app {c['benchmark_app_seq_per_s']:.1f} seq/s, ratio {c['ratio']:.2f}"
        out.append(
            f"- **GAP > {GAP:.0%}**: {line}: our harness and OpenVINO's own tool disagree; trust neither "
            "number until that is explained"
            if c.get("gap_over_15pct")
            else f"- {line}"
        )
    return out or ["- (no cross-check in bench.json)"]


def render_markdown(rows: list[dict], ctx: dict) -> str:
    parts = [f"# kasp report: {ctx['task']}", "", "## What ran", *_what_ran(ctx), ""]
    if ctx["notes"]:
        parts += [*(f"> **NOTE:** {n}" for n in ctx["notes"]), ""]
    parts += ["## Results", "", render_table(rows, ctx), ""]
    if ctx["flags"]:
        parts += [
            "## FLAGGED BACKENDS",
            "",
            f"> **WARNING: {len(ctx['flags'])} backend(s) drifted from their own torch-fp32 score by more "
            f"than the tolerance ({ctx['tolerance']}). Do not ship them until this is explained.**",
            ">",
            *(f"> - {f}" for f in ctx["flags"]),
            "",
        ]
    if ctx["unstable"]:
        parts += [
            "## Unstable timings",
            "",
            f"> These cells' timing rounds disagreed by more than {UNSTABLE:.0%} (noise on the machine while they ran); "
            "rerun `dvc repro -f bench` before reading ratios from them:",
            ">",
            *(f"> - {u}" for u in ctx["unstable"]),
            "",
        ]
    parts += [
        "## Sparse kernel",
        "",
        *(f"- {k}" for k in ctx["kernels"]),
        "",
        "## benchmark_app cross-check",
        "",
        *_crosscheck(ctx),
        "",
        "## How to read this",
        "",
        "- Precision and provider are what ran, as eval.json and bench.json record it, not what the "
        'backend\'s name asks for; "asked vs ran" says where the two differ and why.',
        "- Every ratio comes from one run on one machine. Expect a few percent of noise; "
        "do not read another CPU's numbers into these.",
        "- Sparse speedups need all three: INT8 weights, AMX on the CPU, and weight sparsity above the "
        "decompression rate. Compare ov-int8 with ov-int8-dense for what the sparse kernel alone buys.",
        "- Size MB is 10^6 bytes on disk; gzip MB is what shipping it compressed costs (zeros compress).",
        f"- Selection: teacher {ctx['selection']['teacher']}, student {ctx['selection']['student']} (last epoch, or best on "
        f"a split of train){ctx['calibration']}: the dev set scored here chose no model. "
        "A model's backends compare on equal terms.",
        "- Compare runs, experiments or machines with "
        "`python -m tools.diagnostics.compare A/bench.json B/bench.json` "
        "(it refuses to put a ratio on pairs that differ in precision, threads, hardware or versions).",
        "",
    ]
    return "\n".join(parts)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on CI or edge boxes
    import matplotlib.pyplot as plt

    return plt


def accuracy_figure(rows: list[dict], shape=None):
    """Score against throughput, one marker per model, every point labelled legibly (pipeline.reporting.labels);
    returned open: plot_accuracy_vs_throughput saves and closes it."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=DPI)  # the saving dpi: labels are placed in its pixels
    points = [r for r in rows if r[TPUT] != NA]
    spots = {}  # a model's identical points (a dense model's ov-int8 and ov-int8-dense) share one label
    for model, marker in zip(dict.fromkeys(r["model"] for r in points), "o^sDv"):
        mine = [r for r in points if r["model"] == model]
        ax.scatter([r[TPUT] for r in mine], [r["score"] for r in mine], marker=marker, s=60, label=model)
        for r in mine:
            spots.setdefault((model, r[TPUT], r["score"]), []).append(r["backend"])
    if not points:
        ax.text(0.5, 0.5, "no throughput measured at this shape", ha="center", transform=ax.transAxes)
    where = f" at batch {shape[0]}, seq {shape[1]}" if shape else ""
    ax.set_xlabel(f"throughput{where} (sequences/s)")
    ax.set_ylabel("dev score (GLUE headline)")
    ax.set_title("Accuracy vs throughput")
    ax.grid(alpha=0.3)
    ax.margins(x=0.15, y=0.12)  # room beside the outermost points for their labels
    if points:
        ax.legend(title="model")
    fig.tight_layout()
    place_labels(ax, [(" / ".join(names), (x, y)) for (_, x, y), names in spots.items()])
    return fig


def plot_accuracy_vs_throughput(rows: list[dict], path, shape=None) -> None:
    fig = accuracy_figure(rows, shape)
    fig.savefig(Path(path), dpi=DPI)
    _pyplot().close(fig)


def _series_label(model: str, seq: int, streams: int) -> str:
    return f"{model} s{seq}" + (f" ×{streams} streams" if streams > 1 else "")


def plot_throughput_by_backend(bench: dict, path) -> None:
    """Grouped bars: backends on x, one bar per (model, seq_len[, streams]), one panel per batch size."""
    plt = _pyplot()
    res = [r for r in bench["results"] if r.get(TPUT) is not None]
    batches = sorted({r["batch"] for r in res}) or [0]
    backends = list(dict.fromkeys(r["backend"] for r in res))
    series = sorted(
        {(r["model"], r["seq_len"], r["streams"]) for r in res}, key=lambda s: (s[0] != "teacher", s)
    )
    fig, axes = plt.subplots(1, len(batches), figsize=(6.5 * len(batches), 4.8), squeeze=False)
    width = 0.8 / max(len(series), 1)
    for ax, batch in zip(axes[0], batches):
        cells = {
            (r["model"], r["seq_len"], r["streams"], r["backend"]): r[TPUT]
            for r in res
            if r["batch"] == batch
        }
        for i, s in enumerate(series):
            xs = [j + (i - (len(series) - 1) / 2) * width for j, b in enumerate(backends) if (*s, b) in cells]
            ys = [cells[(*s, b)] for b in backends if (*s, b) in cells]
            ax.bar(xs, ys, width, label=_series_label(*s))
        ax.set_xticks(range(len(backends)), backends, rotation=30, ha="right")
        ax.set_xlabel("backend")
        ax.set_ylabel("throughput (sequences/s)")
        ax.set_title(f"batch {batch}")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(Path(path), dpi=DPI)
    plt.close(fig)


def plot_data(rows: list[dict], bench: dict) -> dict[str, list[dict]]:
    """Flat records for `dvc plots`: file name -> list of records (labels unique within a file)."""
    acc = [
        {
            "label": f"{r['model']} {r['backend']}",
            "model": r["model"],
            "backend": r["backend"],
            "score": r["score"],
            TPUT: r[TPUT],
        }
        for r in rows
        if r[TPUT] != NA
    ]
    tput = [
        {
            "label": f"{r['model']} {r['backend']} b{r['batch']} s{r['seq_len']}"
            + (f" x{r['streams']}" if r["streams"] > 1 else ""),
            "model": r["model"],
            "backend": r["backend"],
            "batch": r["batch"],
            "seq_len": r["seq_len"],
            "streams": r["streams"],
            TPUT: r[TPUT],
        }
        for r in bench["results"]
        if r.get(TPUT) is not None
    ]
    return {"accuracy_vs_throughput.json": acc, "throughput.json": tput}
