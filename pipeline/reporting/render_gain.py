"""The report's first section: what pruning bought. The student against its own teacher on the same
runtime and precision (so INT8 or OpenVINO alone buys nothing here), then against the PyTorch FP32 teacher."""

from __future__ import annotations

from pipeline.reporting.render import NA, TPUT
from pipeline.serving.target import TARGETS


def _x(v) -> str:
    return NA if v in (None, NA) else f"{v:.2f}×"


def _div(a, b):
    return NA if a in (None, NA) or b in (None, NA) or not b else a / b


def pairs(rows: list[dict]) -> dict:
    """backend -> {"teacher": row, "student": row} for backends both models ran on."""
    by = {}
    for r in rows:
        by.setdefault(r["backend"], {})[r["model"]] = r
    return {b: m for b, m in by.items() if {"teacher", "student"} <= set(m)}


def gains(rows: list[dict]) -> dict:
    """backend -> the student's throughput and b1 p50 over the teacher's, gzip size ratio and Δ score."""
    out = {}
    for b, m in pairs(rows).items():
        t, s = m["teacher"], m["student"]
        out[b] = {
            "throughput_x": _div(s[TPUT], t[TPUT]),
            "latency_x": _div(t["latency_ms_p50"], s["latency_ms_p50"]),
            "gzip_fraction": _div(s["size_gzip_mb"], t["size_gzip_mb"]),
            "delta_score": s["score"] - t["score"],
        }
    return out


def shipped_backend(deploy: dict) -> str | None:
    target = (deploy.get("models", {}).get("student") or {}).get("target")
    return TARGETS[target]["backend"] if target in TARGETS else None


def vocab_note(vocab: dict | None) -> str:
    """The size's reason beyond pruning, when prune trimmed the vocabulary (prune.vocab: task)."""
    if not vocab:
        return ""
    return (
        f"; its word embedding keeps {vocab['rows_kept']:,} of {vocab['rows_original']:,} rows "
        f"(prune.vocab: task, {vocab['dev_oov_token_fraction']:.2%} of dev tokens read [UNK])"
    )


def render_gain(
    rows: list[dict], deploy: dict, compile_: dict, lat, tput, vocab: dict | None = None
) -> list[str]:
    """`vocab`: prune's record of vocabulary trimming, if any; the sizes are compile's, of what ships."""
    g, shipped = gains(rows), shipped_backend(deploy)
    lat_s, tput_s = f"b{lat[0]}×s{lat[1]}", f"b{tput[0]}×s{tput[1]}"
    lines = ["## What pruning bought", ""]
    if shipped in g:
        x = g[shipped]
        bundle = (deploy["models"]["student"].get("bundle_size") or {}).get("gzip_bytes")
        teacher_fp32 = (
            compile_["models"].get("teacher", {}).get("sizes", {}).get("onnx_fp32", {}).get("gzip_bytes")
        )
        size = (
            f"; its bundle is {bundle / 1e6:.1f} MB gzip against {teacher_fp32 / 1e6:.1f} MB for the dense FP32 "
            f"teacher (1/{teacher_fp32 / bundle:.1f}){vocab_note(vocab)}"
            if bundle and teacher_fp32
            else ""
        )
        lines += [
            f"**The shipped student ({shipped}) runs {_x(x['throughput_x'])} its teacher's throughput at "
            f"{tput_s} and {_x(x['latency_x'])} at {lat_s} (p50), on the same runtime and precision, at "
            f"Δ score {x['delta_score']:+.4f}{size}.**",
            "",
        ]
    lines += [
        f"| backend | throughput × teacher @{tput_s} | p50 × teacher @{lat_s} | gzip size ÷ teacher | Δ score |",
        "|---|---|---|---|---|",
    ]
    for b, v in g.items():
        fraction = NA if v["gzip_fraction"] == NA else f"{v['gzip_fraction']:.2f}"
        lines.append(
            f"| {b}{' (shipped)' if b == shipped else ''} | {_x(v['throughput_x'])} | "
            f"{_x(v['latency_x'])} | {fraction} | {v['delta_score']:+.4f} |"
        )
    best = max(
        (r for r in rows if r["model"] == "student" and r.get("speedup_x") not in (None, NA)),
        key=lambda r: r["speedup_x"],
        default=None,
    )
    if best:
        teacher_same = pairs(rows).get(best["backend"], {}).get("teacher", {})
        lines += [
            "",
            f"Against the PyTorch FP32 teacher: the student on {best['backend']} runs "
            f"{_x(best['speedup_x'])} at {tput_s}; the teacher on {best['backend']} alone, unpruned, "
            f"runs {_x(teacher_same.get('speedup_x'))}: the rest is the runtime and precision, not pruning.",
        ]
    return lines + [""]


def headline(rows: list[dict], deploy: dict) -> dict:
    """metrics/report.json's figures of the shipped student against its teacher on the same backend."""
    x = gains(rows).get(shipped_backend(deploy)) or {}

    def num(v):
        return None if v in (None, NA) else round(v, 4)

    out = {
        "student_vs_teacher_x": num(x.get("throughput_x")),
        "student_vs_teacher_x_latency_shape": num(x.get("latency_x")),
        "student_vs_teacher_gzip_fraction": num(x.get("gzip_fraction")),
    }
    return {
        k: v for k, v in out.items() if v is not None
    }  # a figure bench did not time is left out, not null
