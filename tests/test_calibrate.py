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


def test_best_shift_breaks_a_tie_towards_the_smaller_shift():
    # shifts in (1, 2) and in (-3, -2) both score 1.0 here; the smaller |shift| wins
    margins = np.array([-3.0, -2.0, -1.5, 1.0, 2.0, 3.0])
    labels = np.array([0, 1, 1, 1, 0, 1])
    assert best_shift(margins, labels, ["accuracy"])[0] == pytest.approx(-2.5)
    labels = np.array([0, 0, 0, 0, 1, 1])
    assert best_shift(margins, labels, ["accuracy"])[0] == pytest.approx(1.5)


def test_apply_shift_lowers_the_positive_margin_by_the_shift():
    model = torch.nn.Module()
    model.classifier = torch.nn.Linear(3, 2)
    x = torch.randn(5, 3)
    before = model.classifier(x).detach()
    apply_shift(model, 0.8)
    after = model.classifier(x).detach()
    assert torch.allclose(after[:, 0], before[:, 0])
    assert torch.allclose(after[:, 1] - after[:, 0], before[:, 1] - before[:, 0] - 0.8)


@pytest.mark.parametrize(
    "meta",
    [{"problem_type": "regression", "num_labels": 1}, {"problem_type": "classification", "num_labels": 3}],
)
def test_calibration_is_refused_where_there_is_no_single_threshold(meta):
    with pytest.raises(ValueError, match="prune.calibrate = 'train_split' needs a two-class task"):
        check_task({**meta, "task": "x"})


@pytest.mark.parametrize("extra", [{}, {"average_tail": True, "epochs": 3}], ids=["last", "tail_average"])
def test_prune_calibrates_on_held_out_train_rows_only(trained, monkeypatch, extra):
    from pipeline import prune
    from pipeline.core.models import load_trained
    from pipeline.core.tasks import compute_metrics
    from pipeline.core.tokens import load_inputs, split_off
    from pipeline.training import loop, teacher_cache

    params, write = trained
    params["prune"].update({"calibrate": "train_split", "epochs": 2, **extra})
    predicted, cached = [], []
    real_predict, real_cache = loop.predict, teacher_cache.maybe_build
    monkeypatch.setattr(
        loop,
        "predict",
        lambda model, ds, *a, **k: (predicted.append(ds), real_predict(model, ds, *a, **k))[1],
    )
    monkeypatch.setattr(
        teacher_cache, "maybe_build", lambda t, rows, *a: (cached.append(rows), real_cache(t, rows, *a))[1]
    )
    m = prune.main(write(params))
    cal = m["calibration"]
    _, train, dev = load_inputs(params["data"]["out_dir"])
    _, held = split_off(train, params["prune"]["selection_split"], params["prune"]["seed"])
    rows = lambda ds: {tuple(r) for r in np.split(ds.ids, ds.offsets[1:-1])}  # noqa: E731
    assert m["selection"] == "last" and cal["split_size"] == len(held) == m["selection_split_size"]
    assert m["augment"]["train_rows"] == len(train) - len(held)  # distilled on the rest only
    assert len(cached) == 1 and not rows(cached[0]) & rows(held)  # the teacher's targets too
    assert set(cal["uncalibrated_scores"]) == {k for k in m if f"delta_{k}" in m}
    fitted_on = [ds for ds in predicted if len(ds) == len(held) and np.array_equal(ds.ids, held.ids)]
    assert fitted_on and all(
        np.array_equal(ds.ids, held.ids) or np.array_equal(ds.ids, dev.ids) for ds in predicted
    )
    assert (m["tail_average"] is not None) == bool(extra)
    # the saved student carries the shift: it scores held_out_score_after on the held rows, and the
    # shift undone gives held_out_score_before
    student = load_trained(params["prune"]["out_dir"])
    logits = loop.predict(student, held, 32)
    score = lambda lg: compute_metrics(lg, held.labels, ["accuracy", "f1"], "classification")["score"]  # noqa: E731
    assert score(logits) == pytest.approx(cal["held_out_score_after"], abs=1e-6)
    undone = logits + np.array([0.0, cal["logit_shift"]], np.float32)
    assert score(undone) == pytest.approx(cal["held_out_score_before"], abs=1e-6)


def test_calibration_refuses_a_student_that_saw_the_held_out_rows(project):
    from pipeline.core.params import ParamsError, validate

    params, _ = project
    for key, value in (("init", "teacher"), ("reuse_teacher_head", True)):
        with pytest.raises(
            ParamsError, match="prune.calibrate = 'train_split' with .*the teacher trained on every"
        ):
            validate("prune", {**params["prune"], "calibrate": "train_split", key: value})


def test_seeds_keep_the_uncalibrated_control():
    from pipeline.seeds import paired, summarize

    m = {
        "calibration": {"uncalibrated_scores": {"accuracy": 0.70, "f1": 0.80, "score": 0.75}},
        "teacher": {"accuracy": 0.80, "f1": 0.84, "score": 0.82},
    }
    got = paired(m, "calibration", "uncalibrated_scores", "uncalibrated")
    assert got["uncalibrated_delta_accuracy"] == pytest.approx(-0.10)
    s = summarize([{"target_sparsity": 0.95, "accuracy": a, **got} for a in (0.71, 0.73)])["0.95"]
    assert s["uncalibrated_delta_f1"]["mean"] == pytest.approx(-0.04)


def test_threshold_diagnostic_counts_and_ceiling():
    from tools.diagnostics.threshold import diagnose

    margins = np.array([0.5, 1.0, 1.5, 2.0, 3.0, -1.0])
    labels = np.array([0, 0, 0, 1, 1, 1])
    d = diagnose(margins, labels)
    assert (d["predicted_positive"], d["true_positive"], d["true_negative"]) == (5, 2, 0)
    assert d["accuracy"] == pytest.approx(2 / 6)
    assert d["best_threshold_accuracy"] == pytest.approx(5 / 6) and d["best_threshold"] == pytest.approx(1.75)
    assert d["roc_auc"] == pytest.approx(6 / 9)


def test_threshold_diagnostic_runs_on_saved_models(trained, capsys):
    from tools.diagnostics.threshold import main

    params, _ = trained
    (row,) = main([params["teacher"]["out_dir"], "--data", params["data"]["out_dir"]])
    assert row["best_threshold_accuracy"] >= row["accuracy"] and 0 <= row["roc_auc"] <= 1
    assert "roc_auc" in capsys.readouterr().out


def test_threshold_diagnostic_calibrates_on_the_held_out_share_of_train(trained):
    from tools.diagnostics.threshold import main
    from pipeline.core.models import load_trained
    from pipeline.core.tokens import load_inputs, split_off
    from pipeline.training import loop
    from pipeline.training.posthoc import headline

    params, _ = trained
    model_dir, data_dir = params["teacher"]["out_dir"], params["data"]["out_dir"]
    (row,) = main([model_dir, "--data", data_dir, "--held-out", "0.3", "--held-seed", "5"])
    meta, train, dev = load_inputs(data_dir)
    _, held = split_off(train, 0.3, 5)
    model = load_trained(model_dir).eval()
    margin = lambda ds: np.diff(loop.predict(model, ds, 32).astype(np.float64), axis=1)[:, 0]  # noqa: E731
    shift = row["held_out_shift"]
    assert row["held_out_rows"] == len(held)
    # fitted on the held rows (not dev), and the dev scores are taken at it
    assert shift == pytest.approx(best_shift(margin(held), held.labels, meta["metrics"])[0])
    assert row["calibrated_score"] == pytest.approx(headline(margin(dev), dev.labels, meta["metrics"], shift))
    assert row["calibrated_accuracy"] == pytest.approx(((margin(dev) > shift) == (dev.labels == 1)).mean())
    with pytest.raises(SystemExit):  # a share without its seed is refused
        main([model_dir, "--data", data_dir, "--held-out", "0.3"])
