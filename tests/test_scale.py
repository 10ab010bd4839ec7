"""The default recipe scaled by the data (pipeline.training.scale): a 2k-, an 8k- and a 67k-row task get
about the same number of updates, in phases that land where the recipe says, and the teacher's recipe is
chosen without the dev set."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.schema import DEFAULTS
from pipeline.training import scale
from pipeline.training.schedule import step_range

STUDENT = {**DEFAULTS["prune"]}  # the defaults as a params file leaves them: epochs null
TEACHER = {**DEFAULTS["teacher"]}


@pytest.mark.parametrize("rows, epochs, steps", [(2000, 24, 1512), (8000, 6, 1500), (67349, 1, 2105)])
def test_student_steps_phases_and_tail_follow_the_train_rows(rows, epochs, steps):
    p, rec = scale.student(STUDENT, rows)
    assert (p["epochs"], rec["steps"]) == (epochs, steps) and rec["derived"] == ["epochs"]
    start, end, freq = step_range(p, rec["steps"])
    # the ramp, in steps: its end lands on an update, up to one update gap per update early
    assert start == int(0.125 * steps) and 0 <= 0.625 * steps - end <= p["mask_updates"] + 1
    assert len(range(start, end + 1, freq)) == 41  # the first update and 40 more, however long the run
    tail = steps - end - 1
    assert (
        0.37 * steps <= tail <= 0.375 * steps + p["mask_updates"]
    )  # the fixed-sparsity tail (what prune.average_tail: true would average)
    assert p["average_tail"] is False  # the last step ships by default


@pytest.mark.parametrize("rows, epochs", [(2000, 10), (8000, 4), (67349, 2)])
def test_teacher_epochs_reach_its_min_steps_within_the_floor_and_cap(rows, epochs):
    p, rec = scale.teacher(TEACHER, rows, hidden_size=384)
    assert p["epochs"] == epochs and rec["derived"] == ["epochs", "learning_rate"]
    per_epoch = -(-rows // 32)
    assert rec["steps"] == epochs * per_epoch
    assert rec["steps"] >= 1000 or epochs == TEACHER["max_epochs"]  # 2k rows: 63 an epoch, capped at 10
    assert (epochs - 1) * per_epoch < 1000 or epochs == scale.TEACHER_MIN_EPOCHS  # no more than needed


def test_more_sparsity_gets_more_steps_and_a_set_key_is_kept():
    assert scale.student_steps(1500, 0.5) == scale.student_steps(1500, 0.9) == 1500
    assert scale.student_steps(1500, 0.95) == 2122  # x sqrt(2)
    p, rec = scale.student({**STUDENT, "epochs": 3, "average_tail": True}, 3668)
    assert (p["epochs"], p["average_tail"], rec["derived"]) == (3, True, [])
    p, _ = scale.teacher({**TEACHER, "epochs": 5, "learning_rate": 3e-5}, 3668, hidden_size=384)
    assert (p["epochs"], p["learning_rate"]) == (5, 3e-5)


def test_teacher_learning_rate_follows_the_width():
    assert scale.teacher_lr(768) == 5e-5
    assert scale.teacher_lr(384) == 7.1e-5
    assert scale.teacher_lr(1024) == 4.3e-5
    assert scale.teacher_lr(128) > scale.teacher_lr(384) > scale.teacher_lr(1024)


def _weights(out: Path) -> str:
    return hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()


def test_the_adaptive_teacher_never_looks_at_dev(project, monkeypatch):
    """With the defaults (epochs and learning rate derived, the best epoch chosen on a tenth of train), the
    teacher that ships is the same whatever dev's labels are: dev feeds the curves and the report only."""
    from pipeline import data, teacher
    from pipeline.core import tokens

    params, write = project
    params["teacher"].update(
        epochs=None, learning_rate=None, min_steps=13, max_epochs=3, selection="train_split"
    )
    data.main(write(params))
    first = teacher.main(write(params))
    assert (
        first["recipe"]["derived"] == ["epochs", "learning_rate"] and first["epochs"] == 3
    )  # 6 steps an epoch (86 rows)
    assert first["recipe"]["learning_rate"] == scale.teacher_lr(128)  # the tiny model's width
    shipped = _weights(Path(params["teacher"]["out_dir"]))

    real = tokens.load_inputs

    def flipped(path):
        meta, train, dev = real(path)
        dev.labels = (1 - dev.labels).astype(dev.labels.dtype)
        return meta, train, dev

    monkeypatch.setattr(tokens, "load_inputs", flipped)
    second = teacher.main(write(params))
    assert second["selected_epoch"] == first["selected_epoch"]
    assert _weights(Path(params["teacher"]["out_dir"])) == shipped
    assert np.isclose(second["accuracy"], 1 - first["accuracy"])  # dev did change, and was scored


def test_a_learning_rate_search_keeps_the_best_on_the_train_split(project):
    """Each rate trains a teacher from the same start; the one whose best epoch scored highest on the split
    carved from train ships, and every trial is recorded. The winner is the teacher a plain run at its rate
    would have trained."""
    from pipeline import data, teacher

    params, write = project
    params["teacher"].update(epochs=2, selection="train_split", search_learning_rates=[1e-4, 3e-3])
    data.main(write(params))
    m = teacher.main(write(params))
    trials = m["recipe"]["trials"]
    assert [t["learning_rate"] for t in trials] == [1e-4, 3e-3]
    best = max(trials, key=lambda t: t["held_out_score"])
    assert (
        m["recipe"]["learning_rate"] == best["learning_rate"]
        and m["selected_epoch"] == best["selected_epoch"]
    )
    shipped = _weights(Path(params["teacher"]["out_dir"]))
    params["teacher"].update(search_learning_rates=None, learning_rate=best["learning_rate"])
    teacher.main(write(params))
    assert _weights(Path(params["teacher"]["out_dir"])) == shipped


def test_a_search_without_a_train_split_is_refused():
    from pipeline.core.params import ParamsError, validate

    with pytest.raises(
        ParamsError, match="teacher.search_learning_rates .* needs teacher.selection: train_split"
    ):
        validate("teacher", {"search_learning_rates": [3e-5, 7e-5], "selection": "last"})
    with pytest.raises(ParamsError, match="distinct learning rates"):
        validate("teacher", {"search_learning_rates": [3e-5, 3e-5]})
