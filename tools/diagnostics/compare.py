"""Put runs side by side: two or more metrics/bench.json, or two or more metrics/eval.json.

    python -m tools.diagnostics.compare A/bench.json B/bench.json [C/bench.json ...] [--out cmp.md] [--strict]

Rows align on (model, backend, batch, seq_len, streams) for bench files and (model, backend) for
eval files; every later file is compared with the first (A): throughput ratio X/A for bench, score
difference X-A for eval. A pair that differs in precision, inference precision, threads, provider,
hardware (CPU model, core counts, ISA flags), task, or the version of the library the backend runs on
(torch, onnxruntime, openvino), or a row only one file has, is flagged: its values are shown with
"not comparable: <why>" instead of a ratio. Every difference between the files is also listed under
"Flags". --strict exits 1 when anything was flagged. Mixing bench and eval files is an error.
"""

from __future__ import annotations

import argparse
import json
import os
import string
import sys
from pathlib import Path

from pipeline.reporting.render import NA

KEYS = {"bench": ("model", "backend", "batch", "seq_len", "streams"), "eval": ("model", "backend")}
ROW_FIELDS = {
    "bench": ("precision", "inference_precision", "threads", "provider"),
    "eval": ("precision", "threads", "provider"),
}
HARDWARE = ("cpu", "physical_cores", "logical_cpus", "isa")
# A backend's speed and numerics follow its own runtime's version; the other libraries' versions are
# still listed under Flags, but do not void that backend's ratio.
LIBRARY = {"torch": "torch", "ort": "onnxruntime", "ov": "openvino"}


class CompareError(ValueError):
    """Inputs that cannot be compared at all (wrong kind, mixed kinds, malformed rows)."""


def _kind(path, rows: list) -> str:
    if all("throughput_seq_per_s" in r or "latency_ms_p50" in r for r in rows):
        return "bench"
    if all("score" in r for r in rows):
        return "eval"
    raise CompareError(
        f"{path}: 'results' rows have neither latency/throughput (bench.json) nor 'score' (eval.json)"
    )


def load(path) -> dict:
    """One file as {path, kind, rows: key -> row, hardware, versions, task, metrics}."""
    details = Path(path).parent / "details" / Path(path).name  # metrics/<stage>.json holds only headlines
    if not Path(path).parent.name == "details" and details.is_file():
        path = details
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CompareError(f"{path}: cannot read ({e})") from e
    rows = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise CompareError(f"{path}: no 'results' rows; expected a metrics/bench.json or metrics/eval.json")
    kind = _kind(path, rows)
    keyed = {}
    for i, r in enumerate(rows):
        if missing := [k for k in KEYS[kind] if k not in r]:
            raise CompareError(f"{path}: results[{i}] lacks key(s) {missing}")
        key = tuple(r[k] for k in KEYS[kind])
        if key in keyed:
            raise CompareError(f"{path}: results[{i}] repeats {dict(zip(KEYS[kind], key))}")
        keyed[key] = r
    env = doc.get("env") or {}
    hw = doc.get("hardware") or env
    return {
        "path": str(path),
        "kind": kind,
        "rows": keyed,
        "hardware": {k: sorted(hw[k]) if k == "isa" and hw.get(k) else hw.get(k) for k in HARDWARE},
        "versions": {lib: (env.get("versions") or {}).get(lib) for lib in LIBRARY.values()},
        "task": doc.get("task"),
        "metrics": doc.get("metrics"),
    }


def align(files: list[dict]) -> list[tuple[tuple, list]]:
    """(key, [row or None per file]) over the union of keys, in first-seen order."""
    kinds = {f["kind"] for f in files}
    if len(kinds) > 1:
        raise CompareError(
            "cannot compare bench and eval files together: "
            + ", ".join(f"{f['path']} is {f['kind']}" for f in files)
        )
    keys = list(dict.fromkeys(k for f in files for k in f["rows"]))
    return [(k, [f["rows"].get(k) for f in files]) for k in keys]


def file_flags(a: dict, b: dict) -> dict[str, str]:
    """Differences between two whole files: name -> 'value A vs value B'."""
    out = {
        k: f"{a['hardware'][k]} vs {b['hardware'][k]}"
        for k in HARDWARE
        if a["hardware"][k] != b["hardware"][k]
    }
    out.update(
        {
            lib: f"{a['versions'][lib]} vs {b['versions'][lib]}"
            for lib in LIBRARY.values()
            if a["versions"][lib] != b["versions"][lib]
        }
    )
    if a["kind"] == "eval":
        out.update({k: f"{a[k]} vs {b[k]}" for k in ("task", "metrics") if a[k] != b[k]})
    return out


def row_flags(kind: str, ra: dict | None, rb: dict | None, label: str = "B") -> list[str]:
    """Differences within one aligned pair of rows (A's row ra, the other file's row rb)."""
    if ra is None or rb is None:
        return [f"missing in {'A' if ra is None else label}"]
    return [f"{k} {ra.get(k)} vs {rb.get(k)}" for k in ROW_FIELDS[kind] if ra.get(k) != rb.get(k)]


def flags_for(a: dict, b: dict, ra: dict | None, rb: dict | None, label: str = "B") -> list[str]:
    """Why rows ra (file a) and rb (file b) may not be compared; [] when they may."""
    why = row_flags(a["kind"], ra, rb, label)
    if ra is None or rb is None:
        return why
    lib = LIBRARY.get(ra["backend"].split("-")[0])
    return why + [f"{k} {v}" for k, v in file_flags(a, b).items() if k not in LIBRARY.values() or k == lib]


def _value(kind: str, row) -> list[str]:
    if row is None:
        return ["—"] * (2 if kind == "bench" else 1)
    if kind == "eval":
        return [_fmt(row.get("score"), ".4f")]
    return [_fmt(row.get("throughput_seq_per_s"), ".1f"), _fmt(row.get("latency_ms_p50"), ".2f")]


def _fmt(v, spec: str) -> str:
    return NA if v is None else f"{v:{spec}}"


def _change(kind: str, ra: dict, rb: dict) -> str:
    if kind == "eval":
        return _fmt(rb["score"] - ra["score"], "+.4f")
    a, b = ra.get("throughput_seq_per_s"), rb.get("throughput_seq_per_s")
    return NA if not a or b is None else f"{b / a:.2f}x"


def _header(kind: str, labels: list[str]) -> list[str]:
    head = list(KEYS[kind])
    for i, lab in enumerate(labels):
        head += [f"{lab} seq/s", f"{lab} p50 ms"] if kind == "bench" else [f"{lab} score"]
        if i:
            head.append(f"{lab}/A seq/s" if kind == "bench" else f"{lab}-A score")
    return head


def render(files: list[dict], aligned: list[tuple[tuple, list]]) -> tuple[str, list[str]]:
    """Markdown table plus the flag list (empty: every pair compared like for like)."""
    kind, labels = files[0]["kind"], list(string.ascii_uppercase[: len(files)])
    head = _header(kind, labels)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    flags = [
        f"{lab} vs A: {k} {v}"
        for lab, f in zip(labels[1:], files[1:])
        for k, v in file_flags(files[0], f).items()
    ]
    for key, rows in aligned:
        cells = [str(k) for k in key] + _value(kind, rows[0])
        for lab, f, row in zip(labels[1:], files[1:], rows[1:]):
            why = flags_for(files[0], f, rows[0], row, lab)
            cells += _value(kind, row) + [
                f"not comparable: {'; '.join(why)}" if why else _change(kind, rows[0], row)
            ]
            # file-wide differences are listed once above; here only what is particular to this row
            flags += [
                f"{lab} vs A, {' '.join(map(str, key))}: {w}" for w in row_flags(kind, rows[0], row, lab)
            ]
        lines.append("| " + " | ".join(cells) + " |")
    what = "throughput ratio X/A (>1: X is faster)" if kind == "bench" else "score difference X-A"
    text = [
        f"# Comparison of {len(files)} {kind} files",
        "",
        *(
            f"- {lab} = `{f['path']}` ({f['hardware']['cpu']}, {f['hardware']['physical_cores']} cores)"
            for lab, f in zip(labels, files)
        ),
        f"- Change column: {what}; flagged pairs show values only",
        "",
        *lines,
        "",
        "## Flags",
        "",
    ]
    text += [f"- {f}" for f in flags] or ["- none: every pair was compared like for like"]
    return "\n".join(text) + "\n", flags


def _write_text(path: str, text: str) -> None:
    tmp = Path(path).with_name(f".{Path(path).name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tools.diagnostics.compare", description=__doc__.splitlines()[0]
    )
    ap.add_argument(
        "files", nargs="+", help="two or more bench.json, or two or more eval.json; the first is A"
    )
    ap.add_argument("--out", help="also write the markdown here")
    ap.add_argument("--strict", action="store_true", help="exit 1 when anything was flagged")
    args = ap.parse_args(argv)
    if not 2 <= len(args.files) <= 26:
        ap.error(f"give 2 to 26 files, got {len(args.files)}")
    try:
        files = [load(p) for p in args.files]
        aligned = align(files)
    except CompareError as e:
        ap.error(str(e))
    text, flags = render(files, aligned)
    print(text)
    if args.out:
        _write_text(args.out, text)
    return 1 if args.strict and flags else 0


if __name__ == "__main__":
    sys.exit(main())
