"""Tail averaging: the running mean against a hand average, zeros kept, checkpoints, and a prune run."""

import pytest
import torch

from pipeline.training.posthoc import TailAverage
from pipeline.training.checkpoint import NoExtra


def masked_sgd(mask):
    """A linear layer trained by SGD whose step re-applies a fixed mask, as INC's hook does."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    plain_step = opt.step

    def step(*a, **kw):
        out = plain_step(*a, **kw)
        with torch.no_grad():
            model.weight.mul_(mask)
        return out

    opt.step = step
    return model, opt


def train(model, opt, steps):
    seen = []
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(8, 4)).pow(2).sum().backward()
        opt.step()
        seen.append({n: q.detach().clone() for n, q in model.named_parameters()})
    return seen


def test_mean_of_the_steps_after_the_tail_starts_and_zeros_stay_zero():
    mask = (torch.arange(12).reshape(3, 4) % 3 != 0).float()
    model, opt = masked_sgd(mask)
    avg = TailAverage(model, opt, after_step=3, inner=NoExtra())
    seen = train(model, opt, 7)
    assert avg.apply() == 4
    for name, q in model.named_parameters():
        hand = torch.stack([s[name] for s in seen[3:]]).mean(0)  # steps 4..7
        assert torch.allclose(q, hand, atol=1e-6)
        assert not torch.allclose(q, seen[-1][name])  # not the last step's weights
    assert torch.all(model.weight[mask == 0] == 0)


def test_an_empty_tail_is_an_error_not_the_last_step():
    model, opt = masked_sgd(torch.ones(3, 4))
    avg = TailAverage(model, opt, after_step=10, inner=NoExtra())
    train(model, opt, 3)
    with pytest.raises(RuntimeError, match="prune.average_tail: no step after the last mask update"):
        avg.apply()


def test_a_resumed_average_equals_an_uninterrupted_one():
    mask = torch.ones(3, 4)
    model, opt = masked_sgd(mask)
    avg = TailAverage(model, opt, after_step=1, inner=NoExtra())
    train(model, opt, 3)
    state = avg.state_dict()
    model2, opt2 = masked_sgd(mask)
    model2.load_state_dict(model.state_dict())
    resumed = TailAverage(model2, opt2, after_step=1, inner=NoExtra())
    resumed.load_state_dict(state)
    torch.manual_seed(1)
    train(model, opt, 2)
    torch.manual_seed(1)
    train(model2, opt2, 2)
    assert (avg.apply(), resumed.apply()) == (4, 4)
    assert all(torch.allclose(a, b) for a, b in zip(model.parameters(), model2.parameters()))


def test_average_tail_refuses_a_selected_epoch_or_no_tail(project):
    from pipeline.core.params import ParamsError, validate

    params, _ = project
    with pytest.raises(ParamsError, match="prune.average_tail = true with prune.selection = 'train_split'"):
        validate("prune", {**params["prune"], "average_tail": True, "selection": "train_split"})
    for key, value, needle in (
        ("end", 1.0, "prune.end = 1.0 .must be < 1."),
        ("target_sparsity", 0.0, "prune.target_sparsity = 0.0 .must be > 0."),
    ):
        with pytest.raises(ParamsError, match=needle):
            validate("prune", {**params["prune"], "average_tail": True, key: value})


def test_prune_ships_the_tail_average_and_keeps_the_target(trained):
    from pipeline import prune

    params, write = trained
    params["prune"].update(average_tail=True, epochs=3)
    m = prune.main(write(params))
    avg = m["tail_average"]
    assert avg["steps"] > 0 and set(avg["last_step_scores"]) == {k for k in m if f"delta_{k}" in m}
    assert abs(m["achieved_sparsity"] - params["prune"]["target_sparsity"]) <= params["prune"]["tolerance"]


def test_seeds_keep_the_paired_last_step_of_an_averaged_run():
    from pipeline.seeds import paired, summarize

    def last_step(m):
        return paired(m, "tail_average", "last_step_scores", "last_step")

    m = {
        "tail_average": {"steps": 9, "last_step_scores": {"accuracy": 0.70, "f1": 0.80, "score": 0.75}},
        "teacher": {"accuracy": 0.80, "f1": 0.84, "score": 0.82},
    }
    got = last_step(m)
    assert got["last_step_delta_accuracy"] == pytest.approx(-0.10) and got["last_step_f1"] == 0.80
    assert last_step({"tail_average": None}) == {}
    runs = [{"target_sparsity": 0.95, "accuracy": a, **got} for a in (0.71, 0.73)]
    s = summarize(runs)["0.95"]
    assert s["accuracy"]["mean"] == pytest.approx(0.72) and s["last_step_delta_f1"]["mean"] == pytest.approx(
        -0.04
    )
