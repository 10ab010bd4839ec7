"""Named prune-while-distilling recipes as ordinary `prune` keys.

A preset is only a label: `prune.recipe: sparsebert` requires the keys below to hold these values
(the schema says which do not), so every setting is in params.yaml and shows in `dvc params diff`.
Write a preset's keys into a params file with

    python -m pipeline.training.recipes sparsebert [params.yaml]

Step counts and learning rates are left to the profile: they depend on the data size. Sources and
what each recipe does: docs/recipes.md.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

RECIPES = {
    # DerronXu/SparseBERT: pre-trained student, attention-score + hidden + soft-CE (T 1) 1:1:1, no hard
    # labels, magnitude top-k per matrix on a cubic ramp to the end, masks recomputed ~100 times.
    "sparsebert": {"init": "pretrained", "alpha_ce": 0.0, "beta_kd": 1.0, "temperature": 1.0, "gamma_hidden": 1.0,
                   "attention_mse": 1.0, "last_hidden_mse": 0.0, "reuse_teacher_head": False,
                   "pruning_type": "magnitude", "scope": "local", "decay": "cubic", "start": 0.0, "end": 1.0,
                   "mask_updates": 100, "lr_schedule": "constant_then_decay"},
    # INC's example: the fine-tuned model as student, MSE on the last hidden state with the teacher's
    # classifier reused, snip_momentum, global scope, ~40 mask updates, constant learning rate.
    "inc": {"init": "teacher", "alpha_ce": 0.0, "beta_kd": 0.0, "gamma_hidden": 0.0, "attention_mse": 0.0,
            "last_hidden_mse": 1.0, "reuse_teacher_head": True, "pruning_type": "snip_momentum", "scope": "global",
            "decay": "exp", "start": 0.0667, "end": 0.6667, "mask_updates": 40, "lr_schedule": "constant_then_decay"},
    # oBERT's schedule with the pruners INC has: dense KD first, gradual global pruning with the learning
    # rate rewound at every mask update, a fixed-sparsity tail, logits KD only (hardness 1, T 2).
    "obert": {"alpha_ce": 0.0, "beta_kd": 1.0, "temperature": 2.0, "gamma_hidden": 0.0, "attention_mse": 0.0,
              "last_hidden_mse": 0.0, "reuse_teacher_head": False, "pruning_type": "snip_momentum",
              "scope": "global", "decay": "cubic", "start": 0.0667, "end": 0.8667, "mask_updates": 40,
              "lr_schedule": "rewind"},
}


def mismatches(prune: dict) -> dict:
    """key -> (value in params, value the named recipe needs); empty for `custom` or a faithful preset."""
    want = RECIPES.get(prune["recipe"], {})
    return {k: (prune.get(k), v) for k, v in want.items() if prune.get(k) != v}


def _yaml(v) -> str:
    return {True: "true", False: "false"}.get(v, str(v)) if isinstance(v, bool) else str(v)


def apply(name: str, params_path: str = "params.yaml") -> list[str]:
    """Set `prune.recipe` and the preset's keys in place, line by line, so comments stay."""
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; allowed: {', '.join(RECIPES)}")
    path = Path(params_path)
    lines, inside, changed, end = path.read_text().splitlines(), False, [], None
    want = {"recipe": name, **{k: _yaml(v) for k, v in RECIPES[name].items()}}
    for i, line in enumerate(lines):
        if re.match(r"^\S", line):
            inside = line.startswith("prune:")
        m = re.match(r"^(  )(\w+):(\s*)([^#\n]*?)(\s*#.*)?$", line) if inside else None
        if inside and line.strip():
            end = i
        if m and m.group(2) in want:
            lines[i] = f"{m.group(1)}{m.group(2)}: {want[m.group(2)]}{m.group(5) or ''}"
            changed.append(m.group(2))
    if end is None:
        raise KeyError(f"{path} has no prune section to set recipe {name!r} in")
    missing = [k for k in want if k not in changed]  # keys the file leaves to their defaults
    lines[end + 1:end + 1] = [f"  {k}: {want[k]}" for k in missing]
    changed += missing
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return changed


if __name__ == "__main__":
    print("set:", ", ".join(apply(*sys.argv[1:])))
