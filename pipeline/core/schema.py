"""The params.yaml schema as data: section -> key -> Key (type, range, choices, a check, whether it
is a path), and every key's default (DEFAULTS, from defaults.yaml beside this file, where each key is
commented). Validation and loading live in pipeline.core.params; every check here returns an error
string or None, so the message can name the key."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.core.models import MODEL_STAGES
from pipeline.core.registry import (
    BACKENDS as BACKEND_REGISTRY,
    CRITERIA,
    LR_SCHEDULES,
    SPEED_BACKENDS,
    TARGETS,
)
from pipeline.core.tasks import normalize_task
from pipeline.core.presets import RECIPES


@dataclass(frozen=True)
class Key:
    type: type | tuple
    choices: tuple | None = None
    lo: float | None = None  # inclusive
    hi: float | None = None  # exclusive when hi_open
    hi_open: bool = False
    nullable: bool = False
    item: type | None = None  # element type for lists
    check: object = None  # callable(value) -> error string or None
    path: bool | str = False  # relative to the params file's directory; "local": see params.is_path


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


SWEEP_STAGES = (
    "prune",
    "export",
    "compile",
    "eval",
    "bench",
)  # the stages a sweep point runs (pipeline.sweep)
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
        return (
            f"point names {bad} must start with a lowercase letter, then letters, digits, '_' or '-' "
            "(they name folders and DVC stages, and `dvc exp run -S` parses them)"
        )
    return next((f"point {k!r}: {e}" for k, x in v.items() if (e := _overridable("prune", x))), None)


def _distinct(what: str, ok):
    return (
        lambda v: None
        if v and len(set(v)) == len(v) and all(map(ok, v))
        else f"must be a non-empty list of distinct {what}"
    )


STUDENT_DATA = (
    "max_train_samples",
    "seed",
)  # a seeds override's `data`: which train rows the student distils on


def _sparsity_overrides(v):
    """seeds.overrides: {"95": {epochs: 16}}: prune keys for the runs at one target sparsity (in percent,
    as the run folders name it), so a longer recipe at a higher sparsity is stated, not hand-run; `data`
    may give them their own train rows. The task, files, dev set and teacher stay the base run's."""
    if bad := [k for k in v if not re.fullmatch(r"\d+(\.\d+)?", str(k)) or not 0 <= float(k) < 100]:
        return f"keys {bad} must be target sparsities in percent, as the run folders name them (e.g. '95')"
    fixed = [k for k, x in v.items() if isinstance(x, dict) and {"seed", "target_sparsity"} & set(x)]
    if fixed:
        return f"overrides for {fixed} may not set seed or target_sparsity: seeds.seeds and seeds.target_sparsities do"
    for k, x in v.items():
        own = isinstance(x, dict) and "data" in x
        if own and (not isinstance(x["data"], dict) or not x["data"] or set(x["data"]) - set(STUDENT_DATA)):
            return (
                f"{k!r}: data must be a non-empty mapping of {', '.join(STUDENT_DATA)} (the rest of the data "
                f"section stays the base run's, as the teacher does), e.g. data: {{max_train_samples: null}}; got {x['data']!r}"
            )
        if e := _overridable("prune", {a: b for a, b in x.items() if a != "data"} if own else x):
            return f"{k!r}: {e}"


LAUNCHERS = ("python", "torchrun", "accelerate launch")


def _launcher(v):
    if not any(v == x or v.startswith(x + " ") for x in LAUNCHERS):
        return (
            f"must start with one of: {', '.join(LAUNCHERS)} (e.g. 'torchrun --nproc_per_node 2'); "
            "dvc.yaml appends `-m pipeline.<stage>`"
        )


def _shape(v):
    if len(v) != 2 or any(i < 1 for i in v):
        return "must be [batch_size, sequence_length]"


TARGET_CHOICES = ("auto", *TARGETS)  # deploy.target
BACKENDS = tuple(BACKEND_REGISTRY)
PROVIDERS = ("cpu", "cuda", "tensorrt")  # onnxruntime execution providers, short names
MODELS = tuple(MODEL_STAGES)  # the deployable models

TRAIN = {
    "epochs": Key(int, lo=1, nullable=True),  # null: the fewest reaching min_steps (pipeline.training.scale)
    "min_steps": Key(int, lo=1),  # optimizer steps an epochs: null run reaches
    "max_epochs": Key(int, lo=1),  # the most epochs an epochs: null run takes
    "batch_size": Key(int, lo=1),
    "eval_batch_size": Key(int, lo=1),
    "learning_rate": Key(float, lo=0, hi=1, hi_open=True),
    "weight_decay": Key(float, lo=0, hi=1),
    "warmup_ratio": Key(float, lo=0, hi=1, hi_open=True),
    "max_grad_norm": Key(float, lo=0),
    "threads": Key(int, lo=0),
    "seed": Key(int, lo=0),
    "checkpoint_dir": Key(str, path=True),
    "checkpoint_every_steps": Key(int, lo=1),
    "selection": Key(
        str, choices=("last", "train_split")
    ),  # the last epoch ships, or the best on a train split
    "selection_split": Key(
        float, lo=0.01, hi=0.5
    ),  # share of train held out for selection: train_split (and prune.calibrate)
    "precision": Key(
        str, choices=("fp32", "bf16", "fp16")
    ),  # mixed precision through Accelerate; fp16 on GPUs only
    "device": Key(str, choices=("auto", "cpu", "cuda")),  # auto: CUDA when one is visible
    "launcher": Key(str, check=_launcher),  # dvc.yaml runs `<launcher> -m pipeline.<stage>`
}

SCHEMA = {
    "data": {
        "model": Key(str, path="local"),
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
    "teacher": {
        "out_dir": Key(str, path=True),
        "min_margin": Key(float, lo=0, hi=1),
        **TRAIN,
        # null: by the model's width (pipeline.training.scale.teacher_lr)
        "learning_rate": Key(float, lo=0, hi=1, hi_open=True, nullable=True),
        # one teacher per rate, the best on the train split ships (pipeline.teacher.search)
        "search_learning_rates": Key(
            list, item=float, nullable=True, check=_distinct("learning rates in (0, 1)", lambda x: 0 < x < 1)
        ),
    },
    "prune": {
        "out_dir": Key(str, path=True),
        "init": Key(str, choices=("pretrained", "teacher")),
        "student_layers": Key(list, item=int, nullable=True, check=_layers),
        "target_sparsity": Key(float, lo=0, hi=1, hi_open=True),
        "pattern": Key(str, check=_pattern),
        "recipe": Key(str, choices=("custom", *RECIPES)),
        "pruning_type": Key(str, choices=tuple(CRITERIA)),
        "scope": Key(str, choices=("local", "global")),
        "start": Key(float, lo=0, hi=1, hi_open=True),
        "end": Key(float, lo=0, hi=1),
        "mask_updates": Key(int, lo=1),
        "lr_schedule": Key(str, choices=LR_SCHEDULES),
        # cubic: Zhu & Gupta's s_f(1-(1-t)^3); INC's cube is s_f t^3 (most pruning at the end of the ramp)
        "decay": Key(str, choices=("exp", "cos", "cube", "cubic", "linear")),
        "excluded": Key(list, item=str),
        "tolerance": Key(float, lo=0, hi=0.5),
        "alpha_ce": Key(float, lo=0),
        "beta_kd": Key(float, lo=0),
        "gamma_hidden": Key(float, lo=0),
        "temperature": Key(float, lo=0.1, hi=100),
        "attention_mse": Key(float, lo=0),
        "last_hidden_mse": Key(float, lo=0),
        "teacher_cache_mb": Key(int, lo=0),
        "augment_copies": Key(int, lo=0),  # perturbed copies of train to distil on (0 = none)
        "augment_prob": Key(float, lo=0, hi=1),  # share of ordinary tokens each copy masks or replaces
        "calibrate": Key(
            str, choices=("none", "train_split")
        ),  # shift the positive logit, fitted on held-out train rows
        # task: keep the embedding rows of train's tokens and the first vocab_core ids (pipeline.core.vocab)
        "vocab": Key(str, choices=("full", "task")),
        "vocab_core": Key(int, lo=0),
        # A speed target: kasp times candidate shapes on this CPU and slims the student (layers, heads, FFN)
        # to reach it with the most weights kept (pipeline.training.plan); the ratio is the student's over
        # the teacher's on speed_backend, throughput at deploy.shape and p50 at [1, deploy.latency_tokens].
        "speedup": Key(float, lo=1, nullable=True),
        "latency_speedup": Key(float, lo=1, nullable=True),
        "speed_backend": Key(str, choices=tuple(SPEED_BACKENDS)),
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
        "models": Key(list, item=str, check=_models),
        "calibration_samples": Key(int, lo=1),
        "embedding_bits": Key(int, choices=(8, 4)),
        "inference_precision": Key(str, choices=("f32", "bf16")),
        "sparse_rate_margin": Key(float, lo=0, hi=0.5),
        "min_sparse_rate": Key(float, lo=0, hi=1),
        "ort_providers": Key(list, item=str, check=_providers),
        "trt_engine_cache_path": Key(str, path=True),
        "threads": Key(int, lo=0),
        "seed": Key(int, lo=0),
    },
    "eval": {
        "models": Key(list, item=str, check=_models),
        "backends": Key(list, item=str, check=_backends),
        "batch_size": Key(int, lo=1),
        "tolerance": Key(float, lo=0, hi=1),
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
    "deploy": {
        "bundle_dir": Key(str, path=True),
        "out_dir": Key(str, path=True),
        "models": Key(list, item=str, check=_models),
        "target": Key(str, choices=TARGET_CHOICES),
        "shape": Key(list, item=int, check=_shape),
        "parity_atol": Key(float, lo=0, hi=1),
        "latency_tokens": Key(int, lo=2),
        "max_batch_size": Key(int, lo=1),
        "threads": Key(int, lo=0),
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
    "seeds": {
        "out_dir": Key(str, path=True),
        "seeds": Key(list, item=int, check=_distinct("seeds >= 0", lambda i: i >= 0)),
        "target_sparsities": Key(
            list, item=float, check=_distinct("target sparsities in [0, 1)", lambda s: 0 <= s < 1)
        ),
        "overrides": Key(dict, check=_sparsity_overrides),
        "reuse": Key(str, choices=("verified", "params")),
    },
    "sweep_report": {
        "out_dir": Key(str, path=True),
        "backends": Key(list, item=str, check=_backends),
        "shape": Key(list, item=int, check=_shape),
    },
}

# Every key's default, written once with its comment in defaults.yaml; a params file states what differs.
DEFAULTS = yaml.safe_load((Path(__file__).with_name("defaults.yaml")).read_text())


def inferred(where: str, default) -> Key:
    """The Key of a default that SCHEMA does not refine: its YAML type (a float is written with a point),
    a list's items' type. Null, empty or mixed defaults say nothing of their type: declare those above."""
    items = {type(x) for x in default} if isinstance(default, list) else set()
    if default is None or default == [] or isinstance(default, dict) or len(items) > 1:
        raise TypeError(f"defaults.yaml: {where} = {default!r} needs a Key in pipeline/core/schema.py")
    return Key(list, item=items.pop()) if items else Key(type(default))


# A new key with a plain type (a bool, a string, a number with no range) is one line in defaults.yaml.
for _section, _values in DEFAULTS.items():
    for _name, _default in _values.items():
        if _name not in SCHEMA[_section]:
            SCHEMA[_section][_name] = inferred(f"{_section}.{_name}", _default)
