"""DVC experiments of a project read back: each experiment of the Git HEAD that `dvc exp show` lists (run
in the foreground, queued, failed), with its params file and a metrics file as its experiment commit holds
them. DVC's Python API lists them (`dvc.api.exp_show`, one flat row per experiment) and reads files at a
revision (`dvc.api.read`); the files are read rather than exp_show's columns, which turn integers into
floats and an absent key into the text "None"."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from pipeline.core.schema import DEFAULTS

# a foreground `dvc exp run` leaves State empty; a queued one finished says Success. Any other state
# (Queued, Running, Failed) has no results: its commit holds the baseline's files, not its own
DONE = (None, "Success")


def repo_root(params_path: str | Path) -> Path:
    """The DVC project a params file is the root params of (its folder holds .dvc/)."""
    root = Path(params_path).resolve().parent
    if not (root / ".dvc").is_dir():
        raise RuntimeError(
            f"{params_path}: not the params file at the root of a DVC project ({root} has no "
            ".dvc/); DVC experiments exist only for the project's own params.yaml"
        )
    return root


def experiments(root: Path, params_file: str, metrics_file: str) -> list[dict]:
    """Every experiment of HEAD, oldest last as DVC lists them: {experiment, rev, state, params, metrics};
    metrics is None for an experiment that has not finished (its state says why)."""
    import dvc.api

    out = []
    for row in dvc.api.exp_show(repo=str(root)):
        if row["typ"] == "baseline":
            continue
        rev, done = row["rev"], row["State"] in DONE
        out.append(
            {
                "experiment": row["Experiment"],
                "rev": rev,
                "state": row["State"] or "Success",
                "params": yaml.safe_load(dvc.api.read(params_file, repo=str(root), rev=rev)) or {},
                "metrics": json.loads(dvc.api.read(metrics_file, repo=str(root), rev=rev)) if done else None,
            }
        )
    return out


def effective(doc: dict) -> dict:
    """A params document flattened to dotted keys, every known section's defaults filled in, so an
    experiment that sets a key to its default does not differ from one that leaves it out."""
    out = {}
    for section, values in doc.items():
        merged = {**DEFAULTS.get(section, {}), **(values or {})} if isinstance(values, dict) else values
        out.update(flatten(merged, section))
    return out


def flatten(value, prefix: str) -> dict:
    if not isinstance(value, dict):
        return {prefix: value}
    return {k: v for key, x in value.items() for k, v in flatten(x, f"{prefix}.{key}").items()}


def differing(docs: dict[str, dict], ignore: tuple[str, ...] = ()) -> dict[str, dict[str, list[str]]]:
    """Keys whose values are not the same in every one of `docs` (name -> flat document), each as
    {value as YAML text: names}; an absent key reads `<absent>`."""
    keys = sorted({k for d in docs.values() for k in d} - set(ignore))
    out = {}
    for k in keys:
        by_value: dict[str, list[str]] = {}
        for name, d in docs.items():
            text = (
                yaml.safe_dump(d[k], default_flow_style=True).strip().removesuffix("...").strip()
                if k in d
                else "<absent>"
            )
            by_value.setdefault(text, []).append(name)
        if len(by_value) > 1:
            out[k] = by_value
    return out


def describe(diff: dict[str, dict[str, list[str]]]) -> str:
    """`prune.epochs: 3 (a, b) / 16 (c)` per differing key, joined by `; `."""
    return "; ".join(
        f"{k}: " + " / ".join(f"{v} ({', '.join(names)})" for v, names in by.items())
        for k, by in diff.items()
    )
