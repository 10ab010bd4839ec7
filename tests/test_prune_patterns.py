"""Each pruning pattern reaches its target through the real prune stage; structured ones slim."""

import numpy as np
import pytest
import torch

from pipeline import prune
from pipeline.core import models
from pipeline.core.models import load_trained
from pipeline.training.sparsity import summarize
from pipeline.core.tokens import Tokens
from pipeline.training import student as st
from pipeline.training.loop import predict


@pytest.mark.parametrize(
    "pattern,target,ptype",
    [("1x1", 0.9, "magnitude"), ("4x1", 0.75, "snip_momentum"), ("2:4", 0.5, "magnitude")],
)
def test_sparse_patterns_hit_target(trained, pattern, target, ptype):
    params, write = trained
    params["prune"].update(pattern=pattern, target_sparsity=target, pruning_type=ptype, epochs=2)
    m = prune.main(write(params))
    assert abs(m["encoder_linear_sparsity"] - target) <= 0.005
    student = load_trained(params["prune"]["out_dir"])
    for name, mod in student.named_modules():
        if isinstance(mod, torch.nn.Linear) and ".encoder." in f".{name}.":
            w = mod.weight.detach()
            if pattern == "4x1":  # whole 4x1 blocks are zero or not
                blocks = (w.reshape(w.shape[0] // 4, 4, w.shape[1]) == 0).all(1)
                assert (w == 0).sum() == blocks.sum() * 4, name
            if pattern == "2:4":  # at most 2 nonzeros in every 4 consecutive inputs
                assert ((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2).all(), name
    assert student.classifier.weight.count_nonzero() == student.classifier.weight.numel()  # excluded


def hand_scores(logits: np.ndarray, gold: np.ndarray) -> dict:
    """Accuracy and F1 (class 1 positive) by hand, independent of pipeline.core.tasks."""
    pred = logits.argmax(1)
    tp, fp, fn = [
        int(np.sum(c))
        for c in ((pred == 1) & (gold == 1), (pred == 1) & (gold == 0), (pred == 0) & (gold == 1))
    ]
    acc, f1 = float(np.mean(pred == gold)), (2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return {"accuracy": acc, "f1": f1, "score": (acc + f1) / 2}


def test_structured_slims_and_reloads(trained, monkeypatch):
    params, write = trained
    params["prune"].update(pattern="channelx1", target_sparsity=0.5, pruning_type="snip_momentum", epochs=6)
    dev = Tokens(params["data"]["out_dir"] + "/eval.safetensors")
    in_memory = {}
    real_save = models.save_model

    def save_and_record(model, *a, **k):  # the student as prune holds it, just before it is written
        in_memory["logits"] = predict(model, dev, params["prune"]["eval_batch_size"])
        return real_save(model, *a, **k)

    monkeypatch.setattr(models, "save_model", save_and_record)
    m = prune.main(write(params))
    assert m["slimmed"] and abs(m["achieved_sparsity"] - 0.5) <= m["tolerance"]
    assert all(s["heads"] == 2 for s in m["layer_shapes"]), m["layer_shapes"]  # 4 heads -> 2
    assert all(s["ffn"] < 256 for s in m["layer_shapes"]), m["layer_shapes"]
    student = load_trained(params["prune"]["out_dir"])
    assert summarize(student)["encoder_linear_params"] == m["encoder_linear_params"]
    logits = predict(student, dev, params["prune"]["eval_batch_size"])
    # the slimmed checkpoint rebuilds the same network: same logits as the student before it was saved
    np.testing.assert_allclose(logits, in_memory["logits"], rtol=0, atol=1e-5)
    assert logits.std(0).min() > 0  # not a constant output that any broken reload could also match
    want = hand_scores(logits, dev.labels)
    assert {k: m[k] for k in want} == pytest.approx(want, abs=1e-12)


def test_layer_drop_without_pruning(trained):
    params, write = trained
    params["prune"].update(student_layers=[1], target_sparsity=0.0, epochs=1)
    m = prune.main(write(params))
    assert len(m["layer_shapes"]) == 1
    assert m["encoder_remaining_weights"] == pytest.approx(0.5)


def encoder_linears(model) -> dict:
    return {
        n: mod.weight.detach()
        for n, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear) and ".encoder." in f".{n}."
    }


def test_init_teacher_starts_from_the_teachers_weights(trained):
    """learning_rate 0: whatever the student holds after prune is where it started. From the teacher it
    keeps every unpruned weight and, of each pruned matrix, the teacher's largest-magnitude weights."""
    params, write = trained
    params["prune"].update(init="teacher", learning_rate=0.0, target_sparsity=0.5, epochs=1)
    m = prune.main(write(params))
    tdir = params["teacher"]["out_dir"]
    t, s = load_trained(tdir).state_dict(), load_trained(params["prune"]["out_dir"]).state_dict()
    assert set(s) == set(t)
    pruned = {f"{n}.weight" for n in encoder_linears(load_trained(tdir))}
    for k in t:
        if k not in pruned:  # embeddings, LayerNorms, biases, pooler, classifier
            assert torch.equal(s[k], t[k]), k
            continue
        kept = s[k] != 0
        assert 0.45 < 1 - kept.float().mean() < 0.55, k
        assert torch.equal(s[k][kept], t[k][kept]), k
        assert t[k][kept].abs().min() >= t[k][~kept].abs().max(), k  # magnitude pruning, per matrix (local)
    assert m["encoder_linear_sparsity"] == pytest.approx(0.5, abs=0.005)


@pytest.mark.parametrize("init", ["teacher", "pretrained"])
def test_init_teacher_with_dropped_layers(trained, init):
    """learning_rate 0: an init-teacher student keeping layer [1] is the teacher's layer 1 on the teacher's
    embeddings, pooler and head, tensor for tensor. From the pre-trained checkpoint its head is a fresh one
    and its layer is the untuned one: the contrast shows the check tells the two inits apart."""
    params, write = trained
    params["prune"].update(init=init, learning_rate=0.0, target_sparsity=0.0, student_layers=[1], epochs=1)
    prune.main(write(params))
    t, s = (
        load_trained(params["teacher"]["out_dir"]).state_dict(),
        load_trained(params["prune"]["out_dir"]).state_dict(),
    )
    same = {k: torch.equal(s[k], t[k.replace("encoder.layer.0.", "encoder.layer.1.")]) for k in s}
    if init == "teacher":
        assert all(same.values()), [k for k, v in same.items() if not v][:3]
    else:
        assert not same["classifier.weight"] and not same["bert.encoder.layer.0.attention.self.query.weight"]


def test_init_teacher_without_pruning_is_the_teacher(trained):
    params, write = trained
    params["prune"].update(init="teacher", learning_rate=0.0, target_sparsity=0.0, epochs=1)
    m = prune.main(write(params))
    t, s = (
        load_trained(params["teacher"]["out_dir"]).state_dict(),
        load_trained(params["prune"]["out_dir"]).state_dict(),
    )
    assert all(torch.equal(s[k], t[k]) for k in t)
    assert {k: m[k] for k in ("accuracy", "f1", "score")} == {
        k: m["teacher"][k] for k in ("accuracy", "f1", "score")
    }
    assert m["delta_score"] == 0.0


def test_missed_target_fails_and_keeps_nothing(trained):
    params, write = trained
    # 1x1 at "0.9" leaves a fraction of a weight per matrix over: a zero tolerance must fail
    params["prune"].update(tolerance=0.0, target_sparsity=0.9, epochs=1)
    with pytest.raises(st.PruneError, match="missed prune.target_sparsity"):
        prune.main(write(params))
    assert not __import__("os").path.exists(params["prune"]["out_dir"])


def test_block_pattern_that_does_not_fit_is_named(trained):
    params, write = trained
    params["prune"].update(pattern="5x1", target_sparsity=0.8)  # hidden 128 is not a multiple of 5
    with pytest.raises(st.PruneError, match="does not divide.*attention.self.query"):
        prune.main(write(params))


def test_structured_tolerance_and_head_hint():
    from types import SimpleNamespace as NS

    from transformers import BertConfig

    minilm = BertConfig(hidden_size=384, num_attention_heads=12, intermediate_size=1536)
    # half a head (49,152 / 2 weights) plus 32 FFN channels (2 x 384 x 32) of a 1,769,472-weight layer
    assert st.structured_tolerance(minilm) == pytest.approx((49152 / 2 + 24576) / 1769472)
    layer = NS(attention=NS(self=NS(num_attention_heads=7)))
    student = NS(base_model=NS(encoder=NS(layer=[layer, layer])), config=NS(num_attention_heads=12))
    assert "heads kept per layer [7, 7] of 12" in st.structured_hint(student, 0.5)
    assert st.structured_hint(student, 0.5).endswith("6/12, e.g. 0.5001")
    assert st.structured_hint(student, 0.8333).endswith("10/12, e.g. 0.8334")
