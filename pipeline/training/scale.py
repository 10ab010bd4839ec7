"""The default recipe, scaled by the data instead of tuned per task: how long the teacher and the student
train, and the teacher's learning rate.

A task brings a number of train rows, not a recipe. A key left null in params (the defaults) is derived here,
from what the run trains on, before training starts; a key a params file sets is used as set. What was
derived is recorded in the stage's metrics (`recipe`), so a run says what it actually did.

- epochs: the fewest that give `min_steps` optimizer steps, between a floor and `max_epochs`. A small task
  (MRPC's 3,668 pairs: 115 steps an epoch) trains for more epochs than a large one (SST-2's 67,349
  sentences: one epoch is 2,105 steps), so both get about the same number of updates.
- the student's step budget grows with the sparsity above 90%, by sqrt(0.1 / (1 - s)) (95%: x1.41): at 95%
  both MRPC and SST-2 were still gaining at the end of the 90% step count, and both met their 95% bands
  only with more steps (1,840 and 4,210; docs/recipes.md).
- the teacher's learning rate, by the model's width: 5e-5 at BERT-base's 768 (the published default),
  times sqrt(768 / hidden), so MiniLM's 384 gets 7.1e-5 and BERT-large's 1024 4.3e-5.

Tail averaging (prune.average_tail) is off by default: the last step ships. With the tuned per-task recipes it
had gained at 95% (+0.29 SST-2 over 4 seeds, +0.33 MRPC over 3, paired against the same runs' last step), but
with this default recipe and its own teachers it cost SST-2 0.61 at 90% and 0.57-1.03 at 95% (every seed worse)
and was level on STS-B (-0.07 and -0.08 Pearson), and on slimmed structures it cost SST-2 0.73 and MRPC 0.16
(docs/recipes.md). It stays a key a recipe may set.
"""

from __future__ import annotations

import math

TEACHER_MIN_EPOCHS = 2  # a large task still sees its data twice
STUDENT_MIN_EPOCHS = 1
BASE_WIDTH, BASE_LR = 768, 5e-5  # BERT-base's published fine-tuning learning rate


def per_epoch(rows: int, batch_size: int) -> int:
    """Optimizer steps in one epoch (the training loop's count: the last batch may be short)."""
    return math.ceil(rows / batch_size)


def epochs_for(rows: int, batch_size: int, min_steps: int, max_epochs: int, min_epochs: int = 1) -> int:
    """The fewest epochs that reach min_steps, kept within [min_epochs, max_epochs]."""
    wanted = math.ceil(min_steps / per_epoch(rows, batch_size))
    return max(min_epochs, min(max_epochs, wanted))


def student_steps(min_steps: int, target_sparsity: float) -> int:
    """The student's step budget: min_steps up to 90% sparsity, then growing as the weights kept shrink."""
    kept = max(1e-6, 1.0 - target_sparsity)
    return math.ceil(min_steps * math.sqrt(max(1.0, 0.1 / kept)))


def teacher_lr(hidden_size: int) -> float:
    """The teacher's learning rate for a model of this width, to two significant digits."""
    return float(f"{BASE_LR * math.sqrt(BASE_WIDTH / hidden_size):.2g}")


def teacher(p: dict, rows: int, hidden_size: int) -> tuple[dict, dict]:
    """(the teacher's params with epochs and learning_rate filled in, what was derived from what)."""
    epochs = p["epochs"] or epochs_for(
        rows, p["batch_size"], p["min_steps"], p["max_epochs"], TEACHER_MIN_EPOCHS
    )
    lr = p["learning_rate"] or teacher_lr(hidden_size)
    record = {
        "train_rows": rows,
        "epochs": epochs,
        "steps": epochs * per_epoch(rows, p["batch_size"]),
        "learning_rate": lr,
        "derived": [k for k in ("epochs", "learning_rate") if p[k] is None],
    }
    return {**p, "epochs": epochs, "learning_rate": lr}, record


def student(p: dict, rows: int) -> tuple[dict, dict]:
    """(the student's params with epochs filled in, what was derived from what)."""
    budget = student_steps(p["min_steps"], p["target_sparsity"])
    epochs = p["epochs"] or epochs_for(rows, p["batch_size"], budget, p["max_epochs"], STUDENT_MIN_EPOCHS)
    record = {
        "train_rows": rows,
        "epochs": epochs,
        "steps": epochs * per_epoch(rows, p["batch_size"]),
        "step_budget": budget,
        "average_tail": p["average_tail"],
        "derived": ["epochs"] if p["epochs"] is None else [],
    }
    return {**p, "epochs": epochs}, record


def weak_teacher_advice(recipe: dict) -> str:
    """The advice a weak teacher's message gives, from the recipe it trained with."""
    return (
        f"It trained {recipe['epochs']} epochs ({recipe['steps']} steps on {recipe['train_rows']} rows) at "
        f"learning rate {recipe['learning_rate']:g}. Try more steps (teacher.min_steps, or teacher.epochs up "
        f"to teacher.max_epochs), a lower learning rate (teacher.learning_rate), or several, compared on a split "
        f"of train (teacher.search_learning_rates: [3.0e-5, 7.0e-5]); a task this small or hard may also need a larger base model (data.model)."
    )
