"""Sweep report rendering: SparseBERT's table (method, remaining weights, task metrics, average),
the winner at each compression level, and the two plots. Pure functions of parsed metrics files;
pipeline/sweep_report.py reads the files and writes the outputs."""

from __future__ import annotations

import itertools
from pathlib import Path

from pipeline.reporting.render import NA, TPUT, _pyplot, bench_cells, bench_value, fmt

TEACHER = "dense teacher"
CATEGORIES = (
    "Without pruning",
    "Structural pruning",
    "Sparse pruning",
    "Structural + sparse",
)  # SparseBERT's groups


def category(method: str) -> str:
    structural = method.startswith(("layer-drop", "structured"))
    sparse = any(k in method for k in ("unstructured", "block", "N:M"))
    return CATEGORIES[
        0 if method in (TEACHER, "dense") else 3 if structural and sparse else 1 if structural else 2
    ]


def table_order(row: dict) -> tuple:
    return CATEGORIES.index(category(row["method"])), row["method"], -row["encoder_remaining_weights"]


def levels(remaining: list[float], spread: float = 1.25) -> list[int]:
    """Group index of each point's remaining weights: sorted, a new group starts when a value exceeds the
    group's smallest by more than `spread`x. Methods land near, not on, a level (slimming rounds channels)."""
    order = sorted(range(len(remaining)), key=lambda i: remaining[i])
    out, group, low = [0] * len(remaining), -1, None
    for i in order:
        if low is None or remaining[i] > low * spread:
            group, low = group + 1, remaining[i]
        out[i] = group
    return out


def point_row(name: str, docs: dict, backends: list[str], shape) -> dict:
    """One table row from a point's metrics files (sweep, prune, eval, bench)."""
    prune, evals = (
        docs["prune"],
        {r["backend"]: r for r in docs["eval"]["results"] if r["model"] == "student"},
    )
    row = {
        "point": name,
        "method": docs["sweep"]["method"],
        "encoder_remaining_weights": prune["encoder_remaining_weights"],
        "model_remaining_weights": prune.get("model_remaining_weights", NA),
        "metrics": {m: prune[m] for m in docs["eval"]["metrics"]},
        "score": prune["score"],
        "delta_score": prune["delta_score"],
        "wall_time_s": docs["sweep"]["wall_time_s"],
    }
    cells = bench_cells(docs["bench"])
    row["backend_score"] = {b: evals[b]["score"] for b in backends if b in evals}
    row[TPUT] = {b: bench_value(cells, "student", b, shape, TPUT) for b in backends}
    row["speedup_vs_baseline"] = {
        b: bench_value(cells, "student", b, shape, "speedup_vs_baseline") for b in backends
    }
    row["sparse_fc_layers"] = bench_value(cells, "student", "ov-int8", shape, "sparse_fc_layers")
    return row


def teacher_row(
    teacher: dict, metrics: list[str], bench: dict | None, eval_: dict | None, backends: list[str], shape
) -> dict:
    """The dense reference at 100%; its per-backend score and speed come from the base run's eval and bench."""
    scores = {r["backend"]: r["score"] for r in (eval_ or {}).get("results", []) if r["model"] == "teacher"}
    cells = bench_cells(bench or {"results": []})
    return {
        "point": "teacher",
        "method": TEACHER,
        "encoder_remaining_weights": 1.0,
        "model_remaining_weights": 1.0,
        "metrics": {m: teacher[m] for m in metrics},
        "score": teacher["score"],
        "delta_score": 0.0,
        "wall_time_s": NA,
        "backend_score": {b: scores[b] for b in backends if b in scores},
        TPUT: {b: bench_value(cells, "teacher", b, shape, TPUT) for b in backends},
        "speedup_vs_baseline": {
            b: bench_value(cells, "teacher", b, shape, "speedup_vs_baseline") for b in backends
        },
        "sparse_fc_layers": NA,
    }


def pareto(cands: list[tuple]) -> set:
    """Keys of (key, score, throughput) candidates that no other candidate beats on both axes."""
    return {
        k for k, s, t in cands if not any(s2 >= s and t2 >= t and (s2 > s or t2 > t) for _, s2, t2 in cands)
    }


def front(rows: list[dict], backends: list[str]) -> set:
    """(point, backend) pairs on their backend's accuracy-throughput Pareto front. The score is the
    backend's own when eval measured it (INT8 can move accuracy), else PyTorch's; the teacher, timed
    in another run, is a reference line rather than a candidate."""
    out = set()
    for b in backends:
        out |= pareto(
            [
                ((r["point"], b), r["backend_score"].get(b, r["score"]), r[TPUT][b])
                for r in rows
                if r["method"] != TEACHER and r[TPUT].get(b, NA) != NA
            ]
        )
    return out


def winners(rows: list[dict], backend: str) -> list[dict]:
    """Per compression level (most weights first): the most accurate method and the fastest on `backend`."""
    points = [r for r in rows if r["method"] != TEACHER]
    groups: dict[int, list[dict]] = {}
    for r, g in zip(points, levels([r["encoder_remaining_weights"] for r in points])):
        groups.setdefault(g, []).append(r)
    out = []
    for _, rs in sorted(groups.items(), reverse=True):
        fast = [r for r in rs if r[TPUT].get(backend, NA) != NA]
        top = max(r["score"] for r in rs)
        best = {
            "method": " = ".join(dict.fromkeys(r["method"] for r in rs if r["score"] == top)),
            "score": top,
        }
        quick = max(fast, key=lambda r: r[TPUT][backend]) if fast else None
        span = sorted(r["encoder_remaining_weights"] for r in rs)
        label = f"{span[0]:.1%}" if span[-1] - span[0] < 0.0005 else f"{span[0]:.1%}-{span[-1]:.1%}"
        out.append(
            {
                "level": label,
                "methods": len(rs),
                "points": [r["point"] for r in rs],
                "most_accurate": best["method"],
                "score": best["score"],
                "fastest": quick["method"] if quick else NA,
                "backend": backend,
                TPUT: quick[TPUT][backend] if quick else NA,
            }
        )
    return out


def render(rows: list[dict], wins: list[dict], ctx: dict) -> str:
    metrics, backends, shape = ctx["metrics"], ctx["backends"], ctx["shape"]
    head = (
        ["method", "point", "encoder weights", "whole model"]
        + metrics
        + ["avg", "Δavg", f"avg on {backends[0]}"]
        + [f"{b} seq/s" for b in backends]
        + [f"{backends[0]} ×teacher torch", "sparse FC"]
    )
    lines = [
        f"# Compression sweep: {ctx['task']}",
        "",
        (
            f"{len(rows) - 1} points, each distilled from the same teacher. Remaining weights count the encoder's "
            "Linear weights for every method (zeros, slimmed channels and dropped layers alike); the whole-model "
            "column adds embeddings, pooler and classifier, which are never pruned. Throughput at batch "
            f"{shape[0]} × seq {shape[1]}, {ctx['threads']} threads, on {ctx['cpu']}; ×teacher torch is the ratio "
            "to the dense teacher's PyTorch FP32 timed in the same process as the point. Scores are on the dev set, "
            "which chose no model (prune.selection); avg is PyTorch FP32's, the next "
            f"column the same model's on {backends[0]}. ★: on that backend's "
            "accuracy-throughput Pareto front (the backend's own score where eval measured it)."
        ),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    group = None
    for r in sorted(rows, key=table_order):
        if category(r["method"]) != group:
            group = category(r["method"])
            lines.append(f"| *{group}* |" + " |" * (len(head) - 1))
        star = {b: " ★" if (r["point"], b) in ctx["front"] else "" for b in backends}
        cells = [
            r["method"],
            r["point"],
            fmt(r["encoder_remaining_weights"], ".1%"),
            fmt(r["model_remaining_weights"], ".1%"),
            *(fmt(r["metrics"][m], ".4f") for m in metrics),
            fmt(r["score"], ".4f"),
            fmt(100 * r["delta_score"], "+.2f"),
            fmt(r["backend_score"].get(backends[0], NA), ".4f"),
        ]
        lines.append(
            "| "
            + " | ".join(
                cells
                + [fmt(r[TPUT][b], ".1f") + star[b] for b in backends]
                + [fmt(r["speedup_vs_baseline"][backends[0]], ".2f", "×"), str(r["sparse_fc_layers"])]
            )
            + " |"
        )
    lines += [
        "",
        f"## Winner at each level ({backends[0]} for speed)",
        "",
        "Points whose remaining weights lie within 1.25x of each other form a level.",
        "",
        "| remaining weights | points | most accurate | avg | fastest | seq/s |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {w['level']} | {', '.join(w['points'])} | {w['most_accurate']} | {w['score']:.4f} | {w['fastest']} | "
        f"{fmt(w[TPUT], '.1f')} |"
        for w in wins
    ]
    lines += [
        "",
        f"Sweep cost: {ctx['cost']}",
        "",
        "![accuracy vs remaining weights](accuracy_vs_remaining.png)",
        "",
        "![throughput vs remaining weights](throughput_vs_remaining.png)",
        "",
    ]
    return "\n".join(lines)


def _by_method(rows: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: r["encoder_remaining_weights"]):
        if r["method"] != TEACHER:
            groups.setdefault(r["method"], []).append(r)
    return groups


def _remaining_axis(ax, rows: list[dict]) -> None:
    """Log scale, more compression to the right (as in SparseBERT's figure), ticks at the measured levels."""
    from matplotlib.ticker import NullFormatter, PercentFormatter

    ax.set_xscale("log")
    ax.invert_xaxis()
    ticks = sorted({round(r["encoder_remaining_weights"], 3) for r in rows})
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0 if all(t >= 0.1 for t in ticks) else 1))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax.set_xlabel("remaining encoder Linear weights (log scale)")


def plot_accuracy(rows: list[dict], path: Path, metric_label: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for (name, rs), marker in zip(_by_method(rows).items(), itertools.cycle("os^Dvp<>")):
        ax.plot(
            [r["encoder_remaining_weights"] for r in rs], [r["score"] for r in rs], marker=marker, label=name
        )
    teacher = next((r for r in rows if r["method"] == TEACHER), None)
    if teacher:
        ax.axhline(teacher["score"], color="gray", ls="--", label="dense teacher")
    _remaining_axis(ax, rows)
    ax.set_ylabel(f"dev score ({metric_label})")
    ax.set_title("Accuracy vs remaining weights, per method")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_throughput(rows: list[dict], path: Path, backends: list[str], shape, pareto_keys: set) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(backends), figsize=(5 * len(backends), 5.2), squeeze=False, sharey=True)
    groups = _by_method(rows)
    for ax, backend in zip(axes[0], backends):
        for (name, rs), marker in zip(groups.items(), itertools.cycle("os^Dvp<>")):
            rs = [r for r in rs if r[TPUT].get(backend, NA) != NA]
            ax.plot(
                [r["encoder_remaining_weights"] for r in rs],
                [r[TPUT][backend] for r in rs],
                marker=marker,
                label=name,
            )
            on = [r for r in rs if (r["point"], backend) in pareto_keys]
            ax.scatter(
                [r["encoder_remaining_weights"] for r in on],
                [r[TPUT][backend] for r in on],
                s=180,
                facecolors="none",
                edgecolors="black",
                linewidths=1.5,
            )
        teacher = next((r for r in rows if r["method"] == TEACHER and r[TPUT].get(backend, NA) != NA), None)
        if teacher:
            ax.axhline(teacher[TPUT][backend], color="gray", ls="--", label="dense teacher (base run)")
        _remaining_axis(ax, rows)
        ax.set_title(backend)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel(f"throughput, batch {shape[0]} × seq {shape[1]} (sequences/s)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="lower center",
        ncol=len(labels),
        fontsize=8,
        title="ring: on that backend's accuracy-throughput Pareto front",
        title_fontsize=8,
    )
    fig.tight_layout(rect=(0, 0.14, 1, 1))  # the legend sits below the panels, clear of the lines
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_data(rows: list[dict], backends: list[str]) -> dict[str, list[dict]]:
    """Flat records for `dvc plots`."""
    acc = [
        {
            "point": r["point"],
            "method": r["method"],
            "remaining_weights": r["encoder_remaining_weights"],
            "score": r["score"],
        }
        for r in rows
    ]
    tput = [
        {
            "label": f"{r['point']} {b}",
            "method": r["method"],
            "backend": b,
            "remaining_weights": r["encoder_remaining_weights"],
            TPUT: r[TPUT][b],
        }
        for r in rows
        for b in backends
        if r[TPUT].get(b, NA) != NA
    ]
    return {"accuracy_vs_remaining.json": acc, "throughput_vs_remaining.json": tput}
