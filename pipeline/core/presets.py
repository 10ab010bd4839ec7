"""Named prune recipes (presets) as data: the `prune` keys each requires. Validation checks them here;
pipeline.training.recipes writes them into a params file. Sources: docs/recipes.md."""

from __future__ import annotations

RECIPES = {
    # DerronXu/SparseBERT: pre-trained student, attention-score + hidden + soft-CE (T 1) 1:1:1, no hard
    # labels, magnitude top-k per matrix on a cubic ramp to the end, masks recomputed ~100 times.
    "sparsebert": {
        "init": "pretrained",
        "alpha_ce": 0.0,
        "beta_kd": 1.0,
        "temperature": 1.0,
        "gamma_hidden": 1.0,
        "attention_mse": 1.0,
        "last_hidden_mse": 0.0,
        "reuse_teacher_head": False,
        "pruning_type": "magnitude",
        "scope": "local",
        "decay": "cubic",
        "start": 0.0,
        "end": 1.0,
        "mask_updates": 100,
        "lr_schedule": "constant_then_decay",
    },
    # INC's example: the fine-tuned model as student, MSE on the last hidden state with the teacher's
    # classifier reused, snip_momentum, global scope, ~40 mask updates, constant learning rate.
    "inc": {
        "init": "teacher",
        "alpha_ce": 0.0,
        "beta_kd": 0.0,
        "gamma_hidden": 0.0,
        "attention_mse": 0.0,
        "last_hidden_mse": 1.0,
        "reuse_teacher_head": True,
        "pruning_type": "snip_momentum",
        "scope": "global",
        "decay": "exp",
        "start": 0.0667,
        "end": 0.6667,
        "mask_updates": 40,
        "lr_schedule": "constant_then_decay",
    },
    # oBERT's schedule with the pruners INC has: dense KD first, gradual global pruning with the learning
    # rate rewound at every mask update, a fixed-sparsity tail, logits KD only (hardness 1, T 2).
    "obert": {
        "alpha_ce": 0.0,
        "beta_kd": 1.0,
        "temperature": 2.0,
        "gamma_hidden": 0.0,
        "attention_mse": 0.0,
        "last_hidden_mse": 0.0,
        "reuse_teacher_head": False,
        "pruning_type": "snip_momentum",
        "scope": "global",
        "decay": "cubic",
        "start": 0.0667,
        "end": 0.8667,
        "mask_updates": 40,
        "lr_schedule": "rewind",
    },
}


def mismatches(prune: dict) -> dict:
    """key -> (value in params, value the named recipe needs); empty for `custom` or a faithful preset."""
    want = RECIPES.get(prune["recipe"], {})
    return {k: (prune.get(k), v) for k, v in want.items() if prune.get(k) != v}
