"""Distillation pieces on small tensors: the teacher-output cache against a live teacher forward."""

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from transformers import BertConfig, BertForSequenceClassification

from pipeline.core.tokens import Tokens
from pipeline.training.distill import layer_map
from pipeline.training.student import make_loss, teacher_layers
from pipeline.training.teacher_cache import TeacherCache, maybe_build, size_mb

P = {
    "alpha_ce": 0.5,
    "beta_kd": 0.5,
    "gamma_hidden": 1.0,
    "temperature": 2.0,
    "attention_mse": 1.0,
    "last_hidden_mse": 0.5,
}


def tiny_bert(seed: int, layers: int = 2):
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
    )
    return BertForSequenceClassification(cfg).eval()


@pytest.fixture
def ragged(tmp_path) -> Tokens:
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 20, 24)
    ids = rng.integers(5, 50, lengths.sum()).astype(np.int64)
    save_file(
        {
            "input_ids": ids,
            "token_type_ids": np.zeros_like(ids),
            "labels": rng.integers(0, 2, 24),
            "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        },
        str(tmp_path / "t.safetensors"),
    )
    return Tokens(tmp_path / "t.safetensors")


def test_cached_loss_equals_live_teacher_loss(ragged):
    teacher, student = tiny_bert(0), tiny_bert(1)
    mapping = layer_map(2, 2)
    layers, att = teacher_layers(P, mapping)
    assert (layers, att) == ([0, 1, 2], [0, 1])
    cache = TeacherCache.build(
        teacher, ragged, layers, batch_size=5, att_layers=att
    )  # other batches, other padding
    live, cached = make_loss(teacher, P, False, mapping), make_loss(teacher, P, False, mapping, cache)
    for idx in (np.array([3, 0, 17, 9]), np.arange(24)):
        (a, pa), (b, pb) = live(student, ragged.batch(idx), idx), cached(student, ragged.batch(idx), idx)
        assert pa.keys() == pb.keys() == {"ce", "kd", "hidden", "attention", "last_hidden"}
        assert a.item() == pytest.approx(b.item(), rel=1e-5)
        assert a.item() > 0


def test_cache_pads_with_zeros_and_keeps_real_tokens(ragged):
    teacher = tiny_bert(0)
    cache = TeacherCache.build(teacher, ragged, [0, 2])
    idx = np.array([5, 2])
    b = ragged.batch(idx)
    out = cache.outputs(idx, b["input_ids"].shape[1])
    with torch.no_grad():
        ref = teacher(**{k: v for k, v in b.items() if k != "labels"}, output_hidden_states=True)
    mask = b["attention_mask"].bool()
    for t in (0, 2):
        torch.testing.assert_close(
            out.hidden_states[t][mask], ref.hidden_states[t][mask], rtol=1e-5, atol=1e-5
        )
        assert (out.hidden_states[t][~mask] == 0).all()
    torch.testing.assert_close(out.logits, ref.logits, rtol=1e-5, atol=1e-5)


def test_cache_over_its_limit_is_off_and_says_why(ragged):
    teacher = tiny_bert(0)
    mb = size_mb(ragged, [0, 1, 2], 32, 2)
    assert mb == pytest.approx((int(ragged.lengths.sum()) * 3 * 32 + 24 * 2) * 4 / 1e6)
    cache, info = maybe_build(teacher, ragged, [0, 1, 2], limit_mb=0)
    assert cache is None and info["used"] is False and "teacher_cache_mb = 0" in info["why"]
    cache, info = maybe_build(teacher, ragged, [0, 1, 2], limit_mb=1)
    assert cache is not None and info["used"] and info["size_mb"] == round(mb, 1)
