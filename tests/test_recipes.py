"""Recipe pieces against hand computations: loss terms, schedules, movement scores, baselines,
the weak-teacher refusal, presets and honest selection."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.core import presets
from pipeline.core.tasks import baseline_scores, compute_metrics, teacher_quality
from pipeline.training import inc, recipes
from pipeline.training.distill import LossSpec, attention_loss, attention_scores, distill_loss, hidden_loss
from pipeline.training.schedule import lr_factor, step_range, update_steps
from pipeline.training.student import PruneError


def test_attention_scores_and_loss_by_hand():
    torch.manual_seed(0)
    b, n, h, heads = 2, 4, 6, 2
    q, k, q2, k2 = (torch.randn(b, n, h) for _ in range(4))
    s = attention_scores(q, k, heads)
    d = h // heads
    hand = q[1, 2, d:] @ k[1, 3, d:] / math.sqrt(d)  # example 1, head 1, query 2, key 3
    assert s.shape == (b, heads, n, n) and s[1, 1, 2, 3].item() == pytest.approx(hand.item(), rel=1e-6)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    diff = (attention_scores(q, k, heads) - attention_scores(q2, k2, heads)).numpy()
    want = np.mean(
        [
            diff[i, hd, a, c] ** 2
            for i, L in ((0, 3), (1, 2))
            for hd in range(heads)
            for a in range(L)
            for c in range(L)
        ]
    )
    got = attention_loss({0: (q, k)}, {0: (q2, k2)}, [(0, 0)], mask, heads)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_attention_loss_ignores_padded_positions():
    torch.manual_seed(1)
    q, k, q2, k2 = (torch.randn(2, 5, 8) for _ in range(4))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    base = attention_loss({0: (q, k)}, {0: (q2, k2)}, [(0, 0)], mask, 2)
    q[0, 3:], k[0, 3:], q2[1, 4], k2[1, 4] = 100.0, -50.0, 7.0, 9.0  # only padded rows change
    assert attention_loss({0: (q, k)}, {0: (q2, k2)}, [(0, 0)], mask, 2).item() == pytest.approx(base.item())


def test_last_hidden_term_is_the_last_mapped_pair_only():
    torch.manual_seed(2)
    s_h, t_h = [torch.randn(2, 3, 4) for _ in range(3)], [torch.randn(2, 3, 4) for _ in range(3)]
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    out = lambda hs: type("O", (), {"hidden_states": hs, "logits": torch.zeros(2, 2)})()  # noqa: E731
    loss, parts = distill_loss(
        out(s_h),
        out(t_h),
        torch.tensor([0, 1]),
        mask,
        LossSpec({"last_hidden": 2.0}, 1.0, [(0, 0), (1, 1), (2, 2)], regression=False),
    )
    m = mask.unsqueeze(-1).float()
    hand = (((s_h[2] - t_h[2]) ** 2) * m).sum() / (m.sum() * 4)
    assert set(parts) == {"last_hidden"} and loss.item() == pytest.approx(2 * hand.item(), rel=1e-6)
    assert hidden_loss(s_h, t_h, [(2, 2)], mask).item() == pytest.approx(hand.item(), rel=1e-6)


def test_movement_scores_follow_the_direction_weights_move():
    """Fit y = 3x with two weights: w0 = 1 is pushed away from zero (up to 3), w1 = 0.5 on a useless
    input pulled toward zero; movement scores them positive and negative, snip (|W*g|) cannot tell."""
    torch.manual_seed(3)
    x = torch.randn(256, 2)
    y = 3 * x[:, :1]
    w = torch.tensor([[1.0, 0.5]], requires_grad=True)
    score = torch.zeros(1, 2)
    for _ in range(20):
        loss = ((x @ w.T - y) ** 2).mean()
        w.grad = None
        loss.backward()
        score += inc.movement_step(w.data, w.grad)
        with torch.no_grad():
            w -= 0.05 * w.grad
    assert score[0, 0] > 0 > score[0, 1]
    assert abs(w[0, 1]) < 0.5 < w[0, 0]


P = {"start": 0.1, "end": 0.7, "mask_updates": 6, "warmup_ratio": 0.0, "lr_schedule": "linear"}


def test_schedule_lands_on_the_requested_phases():
    start, end, freq = step_range(P, 1000)
    ups = update_steps(P, 1000)
    assert (start, freq) == (100, 99) and ups[0] == 100 and ups[-1] == end <= 699 and len(ups) == 7
    assert all(b - a == freq for a, b in zip(ups, ups[1:]))


def test_cubic_decay_is_zhu_gupta_through_inc_and_cube_is_its_mirror():
    from types import SimpleNamespace

    from neural_compressor.compression.pruner.schedulers import SCHEDULERS

    from pipeline.training.inc import cubic_sparsity, register_cubic

    assert cubic_sparsity(0.9, 0, 40) == 0.0 and cubic_sparsity(0.9, 40, 40) == pytest.approx(0.9)
    assert cubic_sparsity(0.9, 20, 40) == pytest.approx(0.9 * (1 - 0.5**3))
    register_cubic()
    register_cubic()  # idempotent: one subclass, not a chain of them

    def ramp(decay):
        sched = SCHEDULERS["iterative"](
            SimpleNamespace(sparsity_decay_type=decay, max_sparsity_ratio_per_op=0.98)
        )
        return [sched.update_sparsity_ratio(0.9, k, 40, None) for k in range(41)]

    cubic, cube = ramp("cubic"), ramp("cube")
    assert cubic[-1] == pytest.approx(0.9) and cube[-1] == pytest.approx(0.9)
    assert cubic[36] > 0.89 > 0.7 > cube[36]  # 90% into the ramp: cubic is nearly done, INC's cube is not
    assert all(a <= b for a, b in zip(cubic, cubic[1:]))
    assert ramp("exp") == pytest.approx([1 - 0.1 ** (k / 40) for k in range(41)])  # other decays: INC's own


def test_learning_rate_schedules():
    ups, end = update_steps(P, 1000), step_range(P, 1000)[1] + 1
    const = [lr_factor(s, "constant_then_decay", 1000, 50, ups, end) for s in range(1000)]
    assert const[25] == pytest.approx(0.5) and const[50] == const[end - 1] == 1.0
    assert const[end] == 1.0 and const[999] == pytest.approx(1 / (1000 - end)) and const[800] < 1.0
    rew = [lr_factor(s, "rewind", 1000, 0, ups, end) for s in range(1000)]
    for a, b in zip(ups, ups[1:]):  # back to the start at each update, down to the floor by the next
        assert rew[a] == 1.0 and rew[b - 1] == pytest.approx(0.1 + 0.9 / (b - a), rel=1e-6)
    lin = [lr_factor(s, "linear", 1000, 100) for s in range(1000)]
    assert lin[50] == 0.5 and lin[100] == 1.0 and lin[550] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="allowed: linear, constant_then_decay, rewind"):
        lr_factor(0, "cosine", 10, 0)


def test_majority_baseline_and_glue_headline():
    train, dev = np.array([1, 1, 0, 1]), np.array([1, 0, 0, 1, 1])
    b = baseline_scores(train, dev, ["accuracy", "f1"], "classification")
    assert b["accuracy"] == pytest.approx(0.6) and b["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2))
    assert b["score"] == pytest.approx((0.6 + 0.75) / 2)
    reg = baseline_scores(
        np.array([1.0, 2.0]), np.array([0.5, 3.0, 1.0]), ["pearson", "spearman"], "regression"
    )
    assert reg == {"pearson": 0.0, "spearman": 0.0, "score": 0.0}
    cola = compute_metrics(
        np.eye(2)[[1, 1, 0, 1]], np.array([1, 0, 0, 1]), ["mcc", "accuracy"], "classification"
    )
    assert cola["score"] == cola["mcc"] != cola["accuracy"]  # CoLA's headline is MCC alone


def test_weak_teacher_is_refused_with_its_figures(tmp_path):
    from pipeline.prune import check_teacher

    q = teacher_quality({"score": 0.542}, {"score": 0.527}, 0.02)
    assert not q["beats_baseline"] and q["margin_over_baseline"] == pytest.approx(0.015)
    (tmp_path / "quality.json").write_text(json.dumps(q))
    with pytest.raises(
        PruneError, match=r"scores 0.5420 on dev against 0.5270 .*margin \+0.0150.*allow_weak_teacher"
    ):
        check_teacher(tmp_path, allow_weak=False)
    assert check_teacher(tmp_path, allow_weak=True) == q
    recipe = {
        "epochs": 3,
        "steps": 234,
        "train_rows": 2490,
        "learning_rate": 5e-5,
    }  # what to try names its keys
    (tmp_path / "quality.json").write_text(json.dumps({**q, "recipe": recipe}))
    with pytest.raises(
        PruneError,
        match=r"trained 3 epochs \(234 steps on 2490 rows\) at learning rate 5e-05\. "
        r"Try more steps \(teacher.min_steps.*teacher.learning_rate",
    ):
        check_teacher(tmp_path, allow_weak=False)
    (tmp_path / "quality.json").unlink()
    with pytest.raises(PruneError, match="quality.json is missing"):
        check_teacher(tmp_path, allow_weak=False)


def test_a_preset_names_the_keys_that_disagree_and_apply_writes_them(tmp_path):
    from pipeline.core.params import ParamsError, load_section

    root = Path(__file__).resolve().parents[1]
    doc = yaml.safe_load((root / "params.yaml").read_text())
    doc["prune"].update(recipe="sparsebert", alpha_ce=0.5)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(
        ParamsError, match=r"prune.recipe = 'sparsebert' needs .*prune.alpha_ce = 0.0 \(is 0.5\)"
    ):
        load_section("prune", path)
    full = (root / "pipeline/core/defaults.yaml").read_text()  # every key, commented
    path.write_text(full.replace("target_sparsity: 0.9 ", "target_sparsity: 0.5 "))
    changed = recipes.apply("sparsebert", str(path))
    assert "recipe" in changed and "attention_mse" in changed
    p = load_section("prune", path)
    assert presets.mismatches(p) == {} and p["attention_mse"] == 1.0 and p["alpha_ce"] == 0.0
    assert "# pre-softmax attention-score MSE" in path.read_text()  # comments kept
    path.write_text((root / "params.yaml").read_text())  # the repository's: most keys left to their defaults
    changed = recipes.apply("sparsebert", str(path))
    assert {"recipe", "pruning_type", "scope"} <= set(changed)
    assert presets.mismatches(load_section("prune", path)) == {}


def test_movement_and_the_sparsebert_loss_reach_the_target_through_inc(trained):
    from pipeline import prune

    params, write = trained
    params["prune"].update(
        pruning_type="movement",
        target_sparsity=0.8,
        epochs=2,
        attention_mse=1.0,
        last_hidden_mse=1.0,
        lr_schedule="rewind",
        reuse_teacher_head=True,
        decay="cubic",
    )
    m = prune.main(write(params))
    assert abs(m["encoder_linear_sparsity"] - 0.8) <= 0.005
    assert m["teacher_cache"]["used"] and m["teacher_cache"]["size_mb"] > 0
    from pipeline.core.models import load_trained

    s, t = load_trained(params["prune"]["out_dir"]), load_trained(params["teacher"]["out_dir"])
    assert torch.equal(s.classifier.weight, t.classifier.weight)  # the reused head stayed frozen


def test_train_split_selection_never_scores_on_dev(trained, monkeypatch):
    """The epoch that ships is chosen on rows carved from train: every score the selection saw is a
    score on the held-out split, whose rows are train rows, never dev's."""
    from pipeline import teacher
    from pipeline.training import loop

    params, write = trained
    params["teacher"].update(selection="train_split", selection_split=0.25, epochs=2)
    seen, evaluated = [], []
    real_keep, real_eval = loop._keep_best, loop.evaluate
    monkeypatch.setattr(
        loop,
        "_keep_best",
        lambda model, pr, scores, *a: (seen.append(scores), real_keep(model, pr, scores, *a)),
    )
    monkeypatch.setattr(
        loop, "evaluate", lambda model, ds, *a: (evaluated.append(ds), real_eval(model, ds, *a))[1]
    )
    m = teacher.main(write(params))
    assert m["selection"] == "train_split" and m["selection_split_size"] == round(0.25 * 96)
    assert m["train_rows_used"] == 96 - m["selection_split_size"]
    held = [ds for ds in evaluated if len(ds) == m["selection_split_size"]]
    assert len(seen) == 2 and [h["selection"] for h in m["history"]] == seen
    from pipeline.core.tokens import load_inputs

    _, train, dev = load_inputs(params["data"]["out_dir"])
    rows = lambda ds: [tuple(r) for r in np.split(ds.ids, ds.offsets[1:-1])]  # noqa: E731
    assert held and set(rows(held[0])) <= set(rows(train))  # carved from train
    assert all(len(ds) in (len(dev), len(held[0])) for ds in evaluated)  # dev only for the curves
