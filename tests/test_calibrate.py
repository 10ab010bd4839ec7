"""prune.calibrate: the threshold shift against hand cases, its sign in the model, refusals, and a prune run
that fits it on held-out train rows only."""
import numpy as np
import pytest
import torch

from pipeline.training.posthoc import apply_shift, best_shift, check_task


def test_best_shift_moves_the_threshold_past_the_false_positives():
    # a student that calls everything positive at 0; the classes split between margins 1.5 and 2
    margins = np.array([0.5, 1.0, 1.5, 2.0, 3.0, 4.0])
    labels = np.array([0, 0, 0, 1, 1, 1])
    shift, before, after = best_shift(margins, labels, ["accuracy"])
    assert shift == pytest.approx(1.75) and before == pytest.approx(0.5) and after == pytest.approx(1.0)


def test_best_shift_keeps_a_threshold_that_is_already_best():
    margins = np.array([-2.0, -1.0, 1.0, 2.0])
    shift, before, after = best_shift(margins, np.array([0, 0, 1, 1]), ["accuracy", "f1"])
    assert shift == 0.0 and before == after == pytest.approx(1.0)


def test_best_shift_may_lower_the_threshold():
    margins = np.array([-3.0, -2.5, -1.0, -0.5])  # the positives sit below 0
    shift, _, after = best_shift(margins, np.array([0, 0, 1, 1]), ["accuracy"])
    assert shift == pytest.approx(-1.75) and after == pytest.approx(1.0)


def test_apply_shift_lowers_the_positive_margin_by_the_shift():
    model = torch.nn.Module()
    model.classifier = torch.nn.Linear(3, 2)
    x = torch.randn(5, 3)
    before = model.classifier(x).detach()
    apply_shift(model, 0.8)
    after = model.classifier(x).detach()
    assert torch.allclose(after[:, 0], before[:, 0])
    assert torch.allclose(after[:, 1] - after[:, 0], before[:, 1] - before[:, 0] - 0.8)


@pytest.mark.parametrize("meta", [{"problem_type": "regression", "num_labels": 1},
                                  {"problem_type": "classification", "num_labels": 3}])
def test_calibration_is_refused_where_there_is_no_single_threshold(meta):
    with pytest.raises(ValueError, match="prune.calibrate = 'train_split' needs a two-class task"):
        check_task({**meta, "task": "x"})


def test_prune_calibrates_on_held_out_train_rows_only(trained, monkeypatch):
    from pipeline import prune
    from pipeline.core.models import load_trained
    from pipeline.core.tasks import compute_metrics
    from pipeline.core.tokens import load_inputs, split_off
    from pipeline.training import loop

    params, write = trained
    params["prune"].update(calibrate="train_split", epochs=2)
    predicted = []
    real = loop.predict
    monkeypatch.setattr(loop, "predict", lambda model, ds, *a, **k: (predicted.append(ds), real(model, ds, *a, **k))[1])
    m = prune.main(write(params))
    cal = m["calibration"]
    _, train, dev = load_inputs(params["data"]["out_dir"])
    _, held = split_off(train, params["prune"]["selection_split"], params["prune"]["seed"])
    assert m["selection"] == "last" and cal["split_size"] == len(held) == m["selection_split_size"]
    assert m["train_rows_used"] == len(train) - len(held)
    assert set(cal["uncalibrated_scores"]) == {k for k in m if f"delta_{k}" in m}
    fitted_on = [ds for ds in predicted if len(ds) != len(dev)]
    assert len(fitted_on) == 1 and np.array_equal(fitted_on[0].ids, held.ids)  # the held split, never dev
    # the saved student carries the shift: it scores held_out_score_after on the held rows
    student = load_trained(params["prune"]["out_dir"])
    score = compute_metrics(loop.predict(student, held, 32), held.labels, ["accuracy", "f1"], "classification")
    assert score["score"] == pytest.approx(cal["held_out_score_after"], abs=1e-6)
    assert cal["held_out_score_after"] >= cal["held_out_score_before"]


def test_seeds_keep_the_uncalibrated_control():
    from pipeline.seeds import paired, summarize

    m = {"calibration": {"uncalibrated_scores": {"accuracy": 0.70, "f1": 0.80, "score": 0.75}},
         "teacher": {"accuracy": 0.80, "f1": 0.84, "score": 0.82}}
    got = paired(m, "calibration", "uncalibrated_scores", "uncalibrated")
    assert got["uncalibrated_delta_accuracy"] == pytest.approx(-0.10)
    s = summarize([{"target_sparsity": 0.95, "accuracy": a, **got} for a in (0.71, 0.73)])["0.95"]
    assert s["uncalibrated_delta_f1"]["mean"] == pytest.approx(-0.04)
