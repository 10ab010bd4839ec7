"""Stage `data`: read a GLUE task or a user file, tokenize once, save for every later stage.

    python -m pipeline.data            # reads the `data` section of params.yaml

Output (data.out_dir): {train,eval}.safetensors (ragged token ids as flat arrays + offsets),
{train,eval}.jsonl (the raw rows), tokenizer/, meta.json; and metrics/data.json.
"""

from __future__ import annotations

import csv
import io
import json
import random
import sys
from pathlib import Path

import numpy as np

from pipeline.core.common import Timer, atomic_dir, seed_everything, write_json, write_metrics
from pipeline.core.params import load_section, metrics_dir
from pipeline.core.tasks import GLUE, HUB_DEV_SPLIT, normalize_task

csv.field_size_limit(sys.maxsize)
Row = tuple  # (text, text_pair or None, label string)


class DataError(ValueError):
    """Bad input data; the message names the file, row and column at fault."""


def read_text(path: Path) -> str:
    """A data file's text, without a leading UTF-8 BOM (MRPC has one). Decoded whole, so an invalid
    byte is reported at its offset in the file, with its line, not a bare UnicodeDecodeError."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"data file {str(path)!r}: byte offset {e.start} (line {line}) is not UTF-8 "
            f"({e.reason}: {raw[e.start : e.end]!r}); save the file as UTF-8"
        ) from None
    return text.removeprefix("\ufeff")


def read_table(
    path: Path, header: bool = True, quoting: int = csv.QUOTE_MINIMAL
) -> tuple[list, list[list[str]]]:
    """User CSV/TSV files follow the usual quoting; GLUE passes QUOTE_NONE, since some of its fields
    start with a quote that is part of the text."""
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} not found")
    delim = "," if path.suffix.lower() == ".csv" else "\t"
    rows = list(csv.reader(io.StringIO(read_text(path), newline=""), delimiter=delim, quoting=quoting))
    if len(rows) <= int(header):
        raise DataError(f"data file {str(path)!r} has no data rows")
    return (rows[0], rows[1:]) if header else ([], rows)


def read_jsonl(path: Path) -> tuple[list, list[dict]]:
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} not found")
    rows = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    if not rows:
        raise DataError(f"data file {str(path)!r} has no data rows")
    return sorted({k for r in rows for k in r}), rows


def pick_columns(path: Path, header: list, rows: list, text, pair, label) -> list[Row]:
    """Select (text, pair, label) by header name or index; a missing column names the file and the choices."""
    if rows and isinstance(rows[0], dict):
        get = {c: (lambda r, c=c: r.get(c)) for c in header}
    else:
        get = {c: (lambda r, i=i: r[i]) for i, c in enumerate(header)} if header else {}
        get.update({i: (lambda r, i=i: r[i]) for i in range(max(map(len, rows), default=0))})
    for col in (text, pair, label):
        if col is not None and col not in get:
            raise DataError(
                f"{path}: column {col!r} not found; columns: {', '.join(map(str, header or get))}"
            )
    out = []
    for n, r in enumerate(rows, 2 if header else 1):
        try:
            t, p, y = get[text](r), get[pair](r) if pair is not None else None, get[label](r)
        except IndexError:
            raise DataError(
                f"{path}:{n}: row has {len(r)} fields, too few for the configured columns"
            ) from None
        if t is None or y is None or (pair is not None and p is None):
            raise DataError(f"{path}:{n}: empty text or label")
        out.append((str(t), None if p is None else str(p), str(y)))
    return out


def encode_labels(path, rows: list[Row], labels: list[str] | None) -> np.ndarray:
    """Class index per row (classification) or float score (regression, labels=None)."""
    if labels is None:
        try:
            return np.array([float(y) for _, _, y in rows], np.float32)
        except ValueError as e:
            raise DataError(f"{path}: regression label is not a number ({e})") from None
    index = {name: i for i, name in enumerate(labels)}
    for n, (_, _, y) in enumerate(rows):
        if y not in index:
            raise DataError(f"{path}: data row {n + 1} has unknown label {y!r}; allowed: {', '.join(labels)}")
    return np.array([index[y] for _, _, y in rows], np.int64)


def load_glue(p: dict) -> tuple[dict, dict]:
    task = normalize_task(p["task"])
    spec = GLUE[task]
    base = Path(p["glue_dir"]) / spec["dir"]
    splits = {}
    for split, fname in (("train", "train.tsv"), ("eval", spec["dev"])):
        header, rows = read_table(base / fname, header=spec["header"], quoting=csv.QUOTE_NONE)
        splits[split] = (
            base / fname,
            pick_columns(base / fname, header, rows, spec["text"], spec["pair"], spec["label"]),
        )
    return splits, {"task": task, "labels": spec["labels"], "metrics": spec["metrics"]}


def load_hub(p: dict) -> tuple[dict, dict]:
    import datasets

    task = normalize_task(p["task"])
    spec = GLUE[task]
    ds = datasets.load_dataset("nyu-mll/glue", spec["hub"])
    cols = [c for c in ds["train"].column_names if c not in ("label", "idx")]
    splits = {}
    for split, hub_split in (("train", "train"), ("eval", HUB_DEV_SPLIT.get(task, "validation"))):
        d = ds[hub_split]
        names = getattr(d.features["label"], "names", None)
        by_name = names and spec["labels"] and set(names) <= set(spec["labels"])
        rows = [
            (
                r[cols[0]],
                r[cols[1]] if len(cols) > 1 else None,
                names[r["label"]] if by_name else str(r["label"]) if spec["labels"] else r["label"],
            )
            for r in d
        ]
        splits[split] = (f"hub:glue/{task}/{hub_split}", rows)
    return splits, {"task": task, "labels": spec["labels"], "metrics": spec["metrics"]}


def load_files(p: dict) -> tuple[dict, dict]:
    splits = {}
    for split, key in (("train", "train_file"), ("eval", "eval_file")):
        path = Path(p[key])
        header, rows = read_jsonl(path) if path.suffix.lower() == ".jsonl" else read_table(path)
        splits[split] = (
            path,
            pick_columns(path, header, rows, p["text_column"], p["text_pair_column"], p["label_column"]),
        )
    regression = set(p["metrics"]) <= {"pearson", "spearman"}
    labels = None if regression else (p["labels"] or sorted({y for _, _, y in splits["train"][1]}))
    if labels is not None and len(labels) > 2 and "f1" in p["metrics"]:
        raise DataError(
            f"data.metrics has f1, which is binary (class 1 as positive), but there are {len(labels)} "
            f"labels: {labels}; use accuracy or mcc"
        )
    return splits, {"task": "custom", "labels": labels, "metrics": p["metrics"]}


SOURCES = {"glue": load_glue, "hub": load_hub, "file": load_files}


def tokenize(tokenizer, rows: list[Row], max_length: int) -> dict:
    texts = [t for t, _, _ in rows]
    pairs = [q for _, q, _ in rows] if rows and rows[0][1] is not None else None
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    lengths = np.array([len(x) for x in enc["input_ids"]], np.int64)
    type_ids = enc.get("token_type_ids") or [[0] * n for n in lengths]
    return {
        "input_ids": np.concatenate(enc["input_ids"]).astype(np.int32),
        "token_type_ids": np.concatenate(type_ids).astype(np.int8),
        "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
    }


def subsample(count: int, n: int | None, seed: int | None) -> list[int]:
    """Row indices to keep: a seeded random subset in file order, or the first n when seed is None."""
    if n is None or n >= count:
        return list(range(count))
    return list(range(n)) if seed is None else sorted(random.Random(seed).sample(range(count), n))


def main(params_path: str = "params.yaml") -> dict:
    p = load_section("data", params_path)
    seed_everything(p["seed"])
    from safetensors.numpy import save_file

    from pipeline.core.models import load_tokenizer, resolve_model, weights_sha256

    with Timer() as t:
        model_path = resolve_model(p["model"])
        splits, info = SOURCES[p["source"]](p)
        tokenizer = load_tokenizer(model_path)
        limits = {"train": (p["max_train_samples"], p["seed"]), "eval": (p["max_eval_samples"], None)}
        meta = {
            **info,
            "problem_type": "regression" if info["labels"] is None else "classification",
            "num_labels": 1 if info["labels"] is None else len(info["labels"]),
            "model": p["model"],
            "model_sha256": weights_sha256(model_path),
            "max_length": p["max_length"],
            "pad_token_id": tokenizer.pad_token_id or 0,
            "splits": {},
        }
        stats = {}
        with atomic_dir(p["out_dir"]) as out:
            for split, (path, rows) in splits.items():
                labels = encode_labels(path, rows, info["labels"])  # the whole file: bad rows fail early
                keep = subsample(len(rows), *limits[split])
                rows = [rows[i] for i in keep]
                arrays = tokenize(tokenizer, rows, p["max_length"])
                arrays["labels"] = labels[keep]
                save_file(arrays, str(out / f"{split}.safetensors"))
                with (out / f"{split}.jsonl").open("w") as f:
                    for text, pair, label in rows:
                        f.write(json.dumps({"text": text, "text_pair": pair, "label": label}) + "\n")
                lengths = np.diff(arrays["offsets"])
                stats[split] = {
                    "examples": len(rows),
                    "source": str(path),
                    "tokens_mean": round(float(lengths.mean()), 2),
                    "tokens_max": int(lengths.max()),
                    "truncated_fraction": float(np.mean(lengths >= p["max_length"])),
                }
                if info["labels"] is not None:
                    counts = np.bincount(arrays["labels"], minlength=len(info["labels"]))
                    stats[split]["label_counts"] = dict(zip(info["labels"], counts.tolist()))
            meta["splits"] = stats
            tokenizer.save_pretrained(out / "tokenizer")
            write_json(out / "meta.json", meta)
    return write_metrics(
        "data",
        {
            "task": meta["task"],
            **{f"{k}_examples": v["examples"] for k, v in stats.items()},
            "splits": stats,
            "wall_time_s": round(t.seconds, 2),
        },
        None,
        metrics_dir(params_path),
        ("train_examples", "eval_examples", "wall_time_s"),
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
