"""params.yaml schema: every stage validates its own section before it loads anything heavy.

The schema is data (section -> key -> Key). Every key is required, unknown keys are errors, and
each error names the key, the bad value and what is allowed.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.tasks import GLUE, METRICS, normalize_task


class ParamsError(ValueError):
    """A params.yaml problem; the message names the key at fault."""


@dataclass(frozen=True)
class Key:
    type: type | tuple
    choices: tuple | None = None
    lo: float | None = None          # inclusive
    hi: float | None = None          # exclusive when hi_open
    hi_open: bool = False
    nullable: bool = False
    item: type | None = None         # element type for lists
    check: object = None             # callable(value) -> error string or None
    path: bool = False               # relative to the params file's directory


PATTERN_RE = re.compile(r"^(\d+x\d+|\d+:\d+|channelx1)$")


def _pattern(v):
    if not PATTERN_RE.match(v) or ("x" in v and v != "channelx1" and 0 in map(int, v.split("x"))):
        return "allowed: 1x1 (unstructured), NxM blocks such as 4x1, N:M such as 2:4, channelx1 (FFN channels + heads)"


def _task(v):
    try:
        normalize_task(v)
    except KeyError as e:
        return e.args[0]


def _layers(v):
    if len(v) == 0 or any(not isinstance(i, int) or i < 0 for i in v) or sorted(set(v)) != v:
        return "must be a strictly increasing list of layer indices >= 0, or null for all layers"


def _models(v):
    if not v or any(m not in MODELS for m in v) or len(set(v)) != len(v):
        return f"must be a non-empty list of distinct names from: {', '.join(MODELS)}"


def _positive(v):
    if not v or any(i < 1 for i in v):
        return "must be a non-empty list of integers >= 1"


def _providers(v):
    if not v or any(x not in PROVIDERS for x in v):
        return f"must be a non-empty list from: {', '.join(PROVIDERS)}"


def _backends(v):
    if not v or any(x not in BACKENDS for x in v) or len(set(v)) != len(v):
        return f"must be a non-empty list of distinct names from: {', '.join(BACKENDS)}"


SWEEP_STAGES = ("prune", "export", "compile", "eval", "bench")  # pipeline.sweep.STAGES; a test checks they agree
# A folder name, part of a DVC stage name, and a key `dvc exp run -S` (Hydra) accepts: no leading digit, no dot.
POINT_RE = re.compile(r"^[a-z][a-z0-9_-]*$")


def _overridable(section: str, values) -> str | None:
    """Keys a sweep may set: the section's own, minus paths (the sweep places every output)."""
    if not isinstance(values, dict):
        return f"sweep overrides for {section!r} must be a mapping of key: value"
    allowed = [k for k, spec in SCHEMA[section].items() if not spec.path]
    if bad := sorted(set(values) - set(allowed)):
        return f"unknown or path key(s) {bad} for section {section!r}; allowed: {', '.join(allowed)}"


def _overrides(v):
    if bad := sorted(set(v) - set(SWEEP_STAGES)):
        return f"sections {bad} cannot be overridden per sweep; allowed: {', '.join(SWEEP_STAGES)}"
    return next((e for e in (_overridable(s, x) for s, x in v.items()) if e), None)


def _points(v):
    if not v:
        return "must name at least one point, e.g. unstr-10: {pattern: 1x1, target_sparsity: 0.9}"
    if bad := [k for k in v if not isinstance(k, str) or not POINT_RE.match(k)]:
        return (f"point names {bad} must start with a lowercase letter, then letters, digits, '_' or '-' "
                "(they name folders and DVC stages, and `dvc exp run -S` parses them)")
    return next((f"point {k!r}: {e}" for k, x in v.items() if (e := _overridable("prune", x))), None)


def _shape(v):
    if len(v) != 2 or any(i < 1 for i in v):
        return "must be [batch_size, sequence_length]"


# Kept here (not imported from eval.backends) so validation never imports a runtime.
BACKENDS = ("torch-fp32", "ort-fp32", "ort-int8", "ov-fp32", "ov-bf16", "ov-int8", "ov-int8-dense")
PROVIDERS = ("cpu", "cuda", "tensorrt")  # onnxruntime execution providers, short names
MODELS = ("teacher", "student")  # the deployable models: teacher stage and prune stage outputs

TRAIN = {
    "epochs": Key(int, lo=1),
    "batch_size": Key(int, lo=1),
    "eval_batch_size": Key(int, lo=1),
    "learning_rate": Key(float, lo=0, hi=1, hi_open=True),
    "weight_decay": Key(float, lo=0, hi=1),
    "warmup_ratio": Key(float, lo=0, hi=1, hi_open=True),
    "max_grad_norm": Key(float, lo=0),
    "group_by_length": Key(bool),
    "threads": Key(int, lo=0),
    "seed": Key(int, lo=0),
    "checkpoint_dir": Key(str, path=True),
    "checkpoint_every_steps": Key(int, lo=1),
    "progress": Key(bool),
}

SCHEMA = {
    "data": {
        "model": Key(str),
        "source": Key(str, choices=("glue", "file", "hub")),
        "task": Key(str, nullable=True, check=_task),
        "glue_dir": Key(str, nullable=True, path=True),
        "train_file": Key(str, nullable=True, path=True),
        "eval_file": Key(str, nullable=True, path=True),
        "text_column": Key(str, nullable=True),
        "text_pair_column": Key(str, nullable=True),
        "label_column": Key(str, nullable=True),
        "labels": Key(list, item=str, nullable=True),
        "metrics": Key(list, item=str, nullable=True),
        "max_length": Key(int, lo=8, hi=512),
        "max_train_samples": Key(int, lo=1, nullable=True),
        "max_eval_samples": Key(int, lo=1, nullable=True),
        "seed": Key(int, lo=0),
        "out_dir": Key(str, path=True),
    },
    "teacher": {"out_dir": Key(str, path=True), **TRAIN},
    "prune": {
        "out_dir": Key(str, path=True),
        "init": Key(str, choices=("pretrained", "teacher")),
        "student_layers": Key(list, item=int, nullable=True, check=_layers),
        "target_sparsity": Key(float, lo=0, hi=1, hi_open=True),
        "pattern": Key(str, check=_pattern),
        "pruning_type": Key(str, choices=("magnitude", "snip_momentum", "snip", "gradient")),
        "scope": Key(str, choices=("local", "global")),
        "start": Key(float, lo=0, hi=1, hi_open=True),
        "end": Key(float, lo=0, hi=1),
        "frequency": Key(int, lo=1),
        "decay": Key(str, choices=("exp", "cos", "cube", "linear")),
        "excluded": Key(list, item=str),
        "tolerance": Key(float, lo=0, hi=0.5),
        "alpha_ce": Key(float, lo=0),
        "beta_kd": Key(float, lo=0),
        "gamma_hidden": Key(float, lo=0),
        "temperature": Key(float, lo=0.1, hi=100),
        **TRAIN,
    },
    "export": {
        "out_dir": Key(str, path=True),
        "models": Key(list, item=str, check=_models),
        "exporter": Key(str, choices=("optimum", "torch")),
        "opset": Key(int, lo=14, hi=21),
        "atol": Key(float, lo=0, hi=1),
        "parity_batch_sizes": Key(list, item=int, check=_positive),
        "parity_examples": Key(int, lo=1),
        "threads": Key(int, lo=0),
        "seed": Key(int, lo=0),
    },
    "compile": {
        "out_dir": Key(str, path=True),
        "bundle_dir": Key(str, path=True),
        "models": Key(list, item=str, check=_models),
        "calibration_samples": Key(int, lo=1),
        "inference_precision": Key(str, choices=("f32", "bf16")),
        "sparse_rate_margin": Key(float, lo=0, hi=0.5),
        "min_sparse_rate": Key(float, lo=0, hi=1),
        "ort_providers": Key(list, item=str, check=_providers),
        "allow_fallback": Key(bool),
        "trt_fp16_enable": Key(bool),
        "trt_int8_enable": Key(bool),
        "trt_sparsity_enable": Key(bool),
        "trt_engine_cache_path": Key(str, path=True),
        "threads": Key(int, lo=0),
        "seed": Key(int, lo=0),
    },
    "eval": {
        "models": Key(list, item=str, check=_models),
        "backends": Key(list, item=str, check=_backends),
        "batch_size": Key(int, lo=1),
        "tolerance": Key(float, lo=0, hi=1),
        "fail_on_drift": Key(bool),
        "threads": Key(int, lo=0),
    },
    "bench": {
        "models": Key(list, item=str, check=_models),
        "backends": Key(list, item=str, check=_backends),
        "batch_sizes": Key(list, item=int, check=_positive),
        "seq_lens": Key(list, item=int, check=_positive),
        "streams": Key(list, item=int, check=_positive),
        "warmup_iters": Key(int, lo=0),
        "min_iters": Key(int, lo=1),
        "max_seconds": Key(float, lo=0.01),
        "rounds": Key(int, lo=1),
        "threads": Key(int, lo=0),
        "crosscheck_shapes": Key(list, item=list),
        "crosscheck_seconds": Key(int, lo=1),
        "seed": Key(int, lo=0),
    },
    "report": {
        "out_dir": Key(str, path=True),
        "latency_shape": Key(list, item=int, check=_shape),
        "throughput_shape": Key(list, item=int, check=_shape),
    },
    "sweep": {
        "out_dir": Key(str, path=True),
        "overrides": Key(dict, check=_overrides),
        "points": Key(dict, check=_points),
    },
    "sweep_report": {
        "out_dir": Key(str, path=True),
        "backends": Key(list, item=str, check=_backends),
        "shape": Key(list, item=int, check=_shape),
    },
}


def _check_key(section: str, name: str, spec: Key, value) -> None:
    where = f"{section}.{name}"
    if value is None:
        if spec.nullable:
            return
        raise ParamsError(f"params: {where} is null but required ({_type_name(spec)})")
    ok_types = (int, float) if spec.type is float else spec.type
    if isinstance(value, bool) and spec.type is not bool or not isinstance(value, ok_types):
        raise ParamsError(f"params: {where} = {value!r} has type {type(value).__name__}; expected {_type_name(spec)}")
    if spec.choices and value not in spec.choices:
        raise ParamsError(f"params: {where} = {value!r} is not allowed; allowed: {', '.join(spec.choices)}")
    lo_bad = spec.lo is not None and value < spec.lo
    hi_bad = spec.hi is not None and (value >= spec.hi if spec.hi_open else value > spec.hi)
    if lo_bad or hi_bad:
        rng = f"[{spec.lo}, {spec.hi}{')' if spec.hi_open else ']'}" if spec.hi is not None else f">= {spec.lo}"
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
        raise ParamsError(f"params: unknown key(s) {', '.join(f'{section}.{k}' for k in unknown)}; "
                          f"allowed: {', '.join(schema)}")
    missing = [k for k in schema if k not in values]
    if missing:
        raise ParamsError(f"params: missing key(s) {', '.join(f'{section}.{k}' for k in missing)}")
    for name, spec in schema.items():
        _check_key(section, name, spec, values[name])
    CROSS_CHECKS.get(section, lambda v: None)(values)
    return dict(values)


def _check_data(v: dict) -> None:
    if v["source"] in ("glue", "hub") and not v["task"]:
        raise ParamsError(f"params: data.task is required when data.source = {v['source']!r}; "
                          f"allowed: {', '.join(GLUE)}")
    if v["source"] == "glue" and not v["glue_dir"]:
        raise ParamsError("params: data.glue_dir is required when data.source = 'glue'")
    if v["source"] == "file":
        for k in ("train_file", "eval_file", "text_column", "label_column", "metrics"):
            if not v[k]:
                raise ParamsError(f"params: data.{k} is required when data.source = 'file'")
        if v["labels"] is not None and len(set(v["labels"])) != len(v["labels"]):
            raise ParamsError(f"params: data.labels = {v['labels']} repeats a label; each class needs one name")
        bad = [m for m in v["metrics"] if m not in METRICS]
        if bad:
            raise ParamsError(f"params: data.metrics has unknown metric(s) {bad}; allowed: {', '.join(METRICS)}")


def _check_prune(v: dict) -> None:
    if v["end"] <= v["start"]:
        raise ParamsError(f"params: prune.end = {v['end']} must be greater than prune.start = {v['start']}")
    if ":" in v["pattern"]:
        n, m = map(int, v["pattern"].split(":"))
        if not 0 < n < m:
            raise ParamsError(f"params: prune.pattern = {v['pattern']!r} needs 0 < N < M (N of every M pruned)")
        if v["target_sparsity"] > n / m:
            raise ParamsError(f"params: prune.target_sparsity = {v['target_sparsity']} exceeds N/M = {n / m} "
                              f"for prune.pattern = {v['pattern']!r}")
    if v["alpha_ce"] + v["beta_kd"] + v["gamma_hidden"] == 0:
        raise ParamsError("params: prune.alpha_ce, prune.beta_kd and prune.gamma_hidden are all 0: no loss to train")


CROSS_CHECKS = {"data": _check_data, "prune": _check_prune}


def load_section(section: str, params_path: str | Path = "params.yaml") -> dict:
    path = Path(params_path)
    if not path.is_file():
        raise ParamsError(f"params: file {str(path)!r} not found")
    with path.open() as f:
        doc = yaml.safe_load(f) or {}
    if section not in doc:
        raise ParamsError(f"params: section {section!r} missing from {str(path)!r}")
    values = validate(section, doc[section])
    # Paths are relative to the params file, so a profile in its own folder keeps its outputs there;
    # for the repository's params.yaml they stay exactly as written (what dvc.yaml's ${...} sees).
    for name, spec in SCHEMA[section].items():
        if spec.path and values[name] is not None:
            values[name] = os.path.normpath(os.path.join(path.parent, values[name]))
    return values


def metrics_dir(params_path: str | Path = "params.yaml") -> Path:
    """metrics/ beside the params file: metrics/<stage>.json for the repository's params.yaml."""
    return Path(params_path).parent / "metrics"


def upstream_dir(section: str, params_path: str | Path = "params.yaml") -> Path:
    """The output directory of an earlier stage: the one thing a stage reads outside its own section."""
    return Path(load_section(section, params_path)["out_dir"])
