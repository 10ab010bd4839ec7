"""params.yaml validation and loading: every stage validates its own section before it loads anything heavy.

The schema is data (pipeline.core.schema). A key a params file leaves out takes its default
(pipeline/core/defaults.yaml), unknown keys are errors, and each error names the key, the bad value and
what is allowed. Paths are relative to the params file.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from pipeline.core.schema import DEFAULTS, SCHEMA, Key
from pipeline.core.tasks import GLUE, METRICS
from pipeline.core.presets import mismatches


class ParamsError(ValueError):
    """A params.yaml problem; the message names the key at fault."""


def _check_key(section: str, name: str, spec: Key, value) -> None:
    where = f"{section}.{name}"
    if value is None:
        if spec.nullable:
            return
        raise ParamsError(f"params: {where} is null but required ({_type_name(spec)})")
    ok_types = (int, float) if spec.type is float else spec.type
    if isinstance(value, bool) and spec.type is not bool or not isinstance(value, ok_types):
        raise ParamsError(
            f"params: {where} = {value!r} has type {type(value).__name__}; expected {_type_name(spec)}"
        )
    if spec.choices and value not in spec.choices:
        raise ParamsError(f"params: {where} = {value!r} is not allowed; allowed: {', '.join(map(str, spec.choices))}")
    lo_bad = spec.lo is not None and value < spec.lo
    hi_bad = spec.hi is not None and (value >= spec.hi if spec.hi_open else value > spec.hi)
    if lo_bad or hi_bad:
        rng = (
            f"[{spec.lo}, {spec.hi}{')' if spec.hi_open else ']'}" if spec.hi is not None else f">= {spec.lo}"
        )
        raise ParamsError(f"params: {where} = {value!r} is out of range; allowed: {rng}")
    if spec.item is not None and any(isinstance(v, bool) or not isinstance(v, spec.item) for v in value):
        raise ParamsError(f"params: {where} = {value!r} must be a list of {spec.item.__name__}")
    err = spec.check(value) if spec.check else None
    if err:
        raise ParamsError(f"params: {where} = {value!r} is not valid; {err}")


def _type_name(spec: Key) -> str:
    name = "list" if spec.type is list else spec.type.__name__
    return f"{name} or null" if spec.nullable else name


def validate(section: str, values) -> dict:
    if section not in SCHEMA:
        raise ParamsError(f"params: unknown section {section!r}; allowed: {', '.join(SCHEMA)}")
    schema = SCHEMA[section]
    if not isinstance(values, dict):
        raise ParamsError(f"params: section {section!r} must be a mapping, got {type(values).__name__}")
    unknown = sorted(set(values) - set(schema))
    if unknown:
        raise ParamsError(
            f"params: unknown key(s) {', '.join(f'{section}.{k}' for k in unknown)}; "
            f"allowed: {', '.join(schema)}"
        )
    values = {**DEFAULTS[section], **values}
    for name, spec in schema.items():
        _check_key(section, name, spec, values[name])
    CROSS_CHECKS.get(section, lambda v: None)(values)
    return dict(values)


def _check_data(v: dict) -> None:
    if v["source"] in ("glue", "hub") and not v["task"]:
        raise ParamsError(
            f"params: data.task is required when data.source = {v['source']!r}; allowed: {', '.join(GLUE)}"
        )
    if v["source"] == "glue" and not v["glue_dir"]:
        raise ParamsError("params: data.glue_dir is required when data.source = 'glue'")
    if v["source"] == "file":
        for k in ("train_file", "eval_file", "text_column", "label_column", "metrics"):
            if not v[k]:
                raise ParamsError(f"params: data.{k} is required when data.source = 'file'")
        if v["labels"] is not None and len(set(v["labels"])) != len(v["labels"]):
            raise ParamsError(
                f"params: data.labels = {v['labels']} repeats a label; each class needs one name"
            )
        bad = [m for m in v["metrics"] if m not in METRICS]
        if bad:
            raise ParamsError(
                f"params: data.metrics has unknown metric(s) {bad}; allowed: {', '.join(METRICS)}"
            )


def _check_prune(v: dict) -> None:
    if v["end"] <= v["start"]:
        raise ParamsError(f"params: prune.end = {v['end']} must be greater than prune.start = {v['start']}")
    if ":" in v["pattern"]:
        n, m = map(int, v["pattern"].split(":"))
        if not 0 < n < m:
            raise ParamsError(
                f"params: prune.pattern = {v['pattern']!r} needs 0 < N < M (N of every M pruned)"
            )
        if v["target_sparsity"] > n / m:
            raise ParamsError(
                f"params: prune.target_sparsity = {v['target_sparsity']} exceeds N/M = {n / m} "
                f"for prune.pattern = {v['pattern']!r}"
            )
    if v["precision"] == "fp16" and v["target_sparsity"] > 0:
        raise ParamsError(
            "params: prune.precision = 'fp16' with prune.target_sparsity > 0: INC scores the "
            "gradients before fp16's loss scaler skips an overflow step, so one overflow turns "
            "its scores into NaN for the rest of the run; use bf16 or fp32 for pruning"
        )
    weights = ("alpha_ce", "beta_kd", "gamma_hidden", "attention_mse", "last_hidden_mse")
    if sum(v[k] for k in weights) == 0:
        raise ParamsError(f"params: prune.{', prune.'.join(weights)} are all 0: no loss to train")
    if v["augment_copies"] and v["alpha_ce"]:
        raise ParamsError(
            f"params: prune.augment_copies = {v['augment_copies']} with prune.alpha_ce = "
            f"{v['alpha_ce']}: augmented copies have no true label; set alpha_ce: 0 (distil only) or augment_copies: 0"
        )
    planned = v["speedup"] or v["latency_speedup"]
    if v["average_tail"] and (v["target_sparsity"] == 0 and not planned or v["end"] >= 1):
        raise ParamsError(
            f"params: prune.average_tail = true needs a fixed-sparsity tail to average: "
            f"prune.target_sparsity = {v['target_sparsity']} (must be > 0, or a speed target set) and "
            f"prune.end = {v['end']} "
            "(must be < 1)"
        )
    if v["average_tail"] and v["selection"] != "last":
        raise ParamsError(
            f"params: prune.average_tail = true with prune.selection = {v['selection']!r}: the "
            "average spans the tail, so no epoch is selected; set selection: last or average_tail: false"
        )
    if v["calibrate"] != "none" and (v["init"] == "teacher" or v["reuse_teacher_head"]):
        raise ParamsError(
            f"params: prune.calibrate = {v['calibrate']!r} with prune.init = {v['init']!r} and "
            f"prune.reuse_teacher_head = {v['reuse_teacher_head']}: the teacher trained on every train "
            "row, so a student starting from its weights or head has seen the held-out rows; use "
            "init: pretrained and reuse_teacher_head: false, or calibrate: none"
        )
    if (v["speedup"] or v["latency_speedup"]) and v["target_sparsity"] > 0:
        raise ParamsError(
            f"params: prune.speedup = {v['speedup']} / prune.latency_speedup = {v['latency_speedup']} "
            f"plan a slimmed structure (layers, heads, FFN); sparsity on top of it is not supported "
            f"yet: set prune.target_sparsity: 0 (is {v['target_sparsity']}), or both speed targets null"
        )
    if bad := mismatches(v):
        raise ParamsError(
            f"params: prune.recipe = {v['recipe']!r} needs "
            + ", ".join(f"prune.{k} = {want!r} (is {have!r})" for k, (have, want) in bad.items())
            + f"; run `python -m pipeline.training.recipes {v['recipe']} <params.yaml>` or set prune.recipe: custom"
        )


def percent(sparsity: float) -> str:
    """A target sparsity as seeds names it (0.95 -> "95"): run folders and seeds.overrides keys."""
    return f"{round(sparsity * 100, 2):g}"


def percent_key(key) -> str:
    """A seeds.overrides key as percent text (YAML may read `95` as a number)."""
    return f"{float(key):g}"


def _check_seeds(v: dict) -> None:
    listed = {percent(s) for s in v["target_sparsities"]}
    if stray := sorted(str(k) for k in v["overrides"] if percent_key(k) not in listed):
        raise ParamsError(
            f"params: seeds.overrides names {stray}, not in seeds.target_sparsities "
            f"(in percent: {sorted(listed)})"
        )


def _check_teacher(v: dict) -> None:
    if v["search_learning_rates"] and v["selection"] != "train_split":
        raise ParamsError(
            f"params: teacher.search_learning_rates = {v['search_learning_rates']} needs "
            f"teacher.selection: train_split (is {v['selection']!r}): the rates are compared on a "
            "split of train, never on dev"
        )


CROSS_CHECKS = {"data": _check_data, "teacher": _check_teacher, "prune": _check_prune, "seeds": _check_seeds}


LOCAL_PREFIXES = ("./", "../", "/")  # how a local folder is written where a hub id may also stand


def is_path(spec: Key, value) -> bool:
    """Whether this value of a key is a path. A `path="local"` key (data.model) is one only when written
    as ./x, ../x or /x; otherwise it is a hub id or bundled:<name>."""
    if spec.path == "local":
        return isinstance(value, str) and (value in (".", "..") or value.startswith(LOCAL_PREFIXES))
    return bool(spec.path) and value is not None


def as_written(spec: Key, value: str) -> str:
    """A rewritten path as it must be written to still read as a path (a bare `x/y` is a hub id)."""
    return value if spec.path != "local" or value.startswith(LOCAL_PREFIXES) else "./" + value


def validated(doc: dict, section: str) -> dict:
    """A section of a params document with its defaults (a section left out takes every default), validated;
    paths as written. Code that reads a params file as YAML goes through this, never doc[section][key]."""
    return validate(section, doc.get(section) or {})


def load_section(section: str, params_path: str | Path = "params.yaml") -> dict:
    path = Path(params_path)
    if not path.is_file():
        raise ParamsError(f"params: file {str(path)!r} not found")
    with path.open() as f:
        doc = yaml.safe_load(f) or {}
    if not isinstance(doc, dict):
        raise ParamsError(f"params: {str(path)!r} must be a mapping of sections, got {type(doc).__name__}")
    return resolve_paths(section, validated(doc, section), path)


def resolve_paths(section: str, values: dict, params_path: str | Path) -> dict:
    """Paths are relative to the params file, so a profile in its own folder keeps its outputs there;
    for the repository's params.yaml they stay exactly as written (what dvc.yaml's ${...} sees)."""
    values, folder = dict(values), Path(params_path).parent
    for name, spec in SCHEMA[section].items():
        if is_path(spec, values[name]):
            values[name] = as_written(spec, os.path.normpath(os.path.join(folder, values[name])))
    return values


def redundant_keys(params_path: str | Path) -> list[str]:
    """section.key for every key a params file states that resolves as it would if left out (its default,
    a path the default already reaches): a profile or recipe states only what differs."""
    doc = yaml.safe_load(Path(params_path).read_text()) or {}
    out = []
    for section in doc:
        stated = load_section(section, params_path)
        default = resolve_paths(section, validate(section, {}), params_path)
        out += [f"{section}.{k}" for k in doc[section] or {} if stated[k] == default[k]]
    return out


def metrics_dir(params_path: str | Path = "params.yaml") -> Path:
    """metrics/ beside the params file: metrics/<stage>.json for the repository's params.yaml."""
    return Path(params_path).parent / "metrics"


def upstream_dir(section: str, params_path: str | Path = "params.yaml") -> Path:
    """The output directory of an earlier stage: the one thing a stage reads outside its own section."""
    return Path(load_section(section, params_path)["out_dir"])
