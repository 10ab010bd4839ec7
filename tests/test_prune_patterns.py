"""Each pruning pattern reaches its target through the real prune stage; structured ones slim."""
import pytest
import torch

from pipeline import data, prune, teacher
from pipeline.core.models import load_trained
from pipeline.training.sparsity import summarize
from pipeline.core.tokens import Tokens
from pipeline.training import student as st
from pipeline.training.loop import predict


@pytest.fixture
def trained(project):
    """data + teacher once per test on the tiny profile."""
    params, write = project
    params["teacher"]["epochs"] = 1
    data.main(write(params))
    teacher.main(write(params))
    return params, write


@pytest.mark.parametrize("pattern,target,ptype", [
    ("1x1", 0.9, "magnitude"), ("4x1", 0.75, "snip_momentum"), ("2:4", 0.5, "magnitude")])
def test_sparse_patterns_hit_target(trained, pattern, target, ptype):
    params, write = trained
    params["prune"].update(pattern=pattern, target_sparsity=target, pruning_type=ptype, epochs=2)
    m = prune.main(write(params))
    assert abs(m["encoder_linear_sparsity"] - target) <= 0.005
    student = load_trained(params["prune"]["out_dir"])
    for name, mod in student.named_modules():
        if isinstance(mod, torch.nn.Linear) and ".encoder." in f".{name}.":
            w = mod.weight.detach()
            if pattern == "4x1":   # whole 4x1 blocks are zero or not
                blocks = (w.reshape(w.shape[0] // 4, 4, w.shape[1]) == 0).all(1)
                assert (w == 0).sum() == blocks.sum() * 4, name
            if pattern == "2:4":   # at most 2 nonzeros in every 4 consecutive inputs
                assert ((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2).all(), name
    assert student.classifier.weight.count_nonzero() == student.classifier.weight.numel()  # excluded


def test_structured_slims_and_reloads(trained):
    params, write = trained
    params["prune"].update(pattern="channelx1", target_sparsity=0.5, pruning_type="snip_momentum", epochs=6)
    m = prune.main(write(params))
    assert m["slimmed"] and abs(m["achieved_sparsity"] - 0.5) <= m["tolerance"]
    assert all(s["heads"] == 2 for s in m["layer_shapes"]), m["layer_shapes"]   # 4 heads -> 2
    assert all(s["ffn"] < 128 for s in m["layer_shapes"]), m["layer_shapes"]
    student = load_trained(params["prune"]["out_dir"])
    assert summarize(student)["encoder_linear_params"] == m["encoder_linear_params"]
    dev = Tokens(params["data"]["out_dir"] + "/eval.safetensors")
    logits = predict(student, dev, 16)
    assert logits.shape == (len(dev), 2) and (logits.argmax(1) >= 0).all()


def test_layer_drop_without_pruning(trained):
    params, write = trained
    params["prune"].update(student_layers=[1], target_sparsity=0.0, epochs=1)
    m = prune.main(write(params))
    assert len(m["layer_shapes"]) == 1
    assert m["encoder_remaining_weights"] == pytest.approx(0.5)


def test_missed_target_fails_and_keeps_nothing(trained):
    params, write = trained
    # 1x1 at "0.9" leaves a fraction of a weight per matrix over: a zero tolerance must fail
    params["prune"].update(tolerance=0.0, target_sparsity=0.9, epochs=1)
    with pytest.raises(st.PruneError, match="missed prune.target_sparsity"):
        prune.main(write(params))
    assert not __import__("os").path.exists(params["prune"]["out_dir"])


def test_block_pattern_that_does_not_fit_is_named(trained):
    params, write = trained
    params["prune"].update(pattern="5x1", target_sparsity=0.8)   # hidden 64 is not a multiple of 5
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
