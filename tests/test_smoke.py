"""Every stage's main() in sequence on the tiny model and tiny data (the `built` fixture)."""

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.models import load_trained
from pipeline.core.tokens import Tokens
from pipeline.training.loop import predict
from pipeline.training.sparsity import summarize


def test_every_stage_runs_and_writes_metrics(built):
    params, _, m = built
    root = Path(params["data"]["out_dir"]).parent
    assert m["data"]["train_examples"] == 96 and m["data"]["eval_examples"] == 48
    assert m["teacher"]["train_samples_per_s"] > 0
    assert abs(m["prune"]["encoder_linear_sparsity"] - 0.8) <= 0.005
    assert m["prune"]["model_sparsity"] < m["prune"]["encoder_linear_sparsity"]  # embeddings are never pruned
    for stage in m:  # the full record with its environment; the headline file holds a subset of it
        saved = json.loads((root / "metrics" / "details" / f"{stage}.json").read_text())
        assert "env" in saved and saved["env"]["versions"]["torch"]
        head = json.loads((root / "metrics" / f"{stage}.json").read_text())
        assert head and "env" not in head and all(saved[k] == v for k, v in head.items())
        assert all(isinstance(v, (int, float, dict)) for v in head.values()), stage  # scalars DVC can show
    reloaded = load_trained(params["prune"]["out_dir"])
    assert abs(summarize(reloaded)["encoder_linear_sparsity"] - m["prune"]["encoder_linear_sparsity"]) < 1e-9
    assert set(m["export"]["models"]) == {"teacher", "student"}
    assert (Path(params["deploy"]["bundle_dir"]) / "student" / "manifest.json").is_file()


@pytest.mark.parametrize("stage", ["teacher", "prune"])
def test_saved_metrics_are_the_saved_models_scores(built, stage):
    """metrics/<stage>.json's accuracy and F1 recomputed by hand (numpy) from the saved model's dev predictions."""
    params, _, m = built
    root = Path(params["data"]["out_dir"]).parent
    saved = json.loads((root / "metrics" / f"{stage}.json").read_text())
    dev = Tokens(Path(params["data"]["out_dir"]) / "eval.safetensors")
    pred = predict(load_trained(params[stage]["out_dir"]), dev, params[stage]["eval_batch_size"]).argmax(1)
    gold = dev.labels
    tp, fp, fn = (int(np.sum((pred == a) & (gold == b))) for a, b in ((1, 1), (1, 0), (0, 1)))
    accuracy, f1 = float(np.mean(pred == gold)), 2 * tp / (2 * tp + fp + fn)
    assert (saved["accuracy"], saved["f1"]) == pytest.approx((accuracy, f1), abs=1e-12)
    assert saved["score"] == pytest.approx((accuracy + f1) / 2, abs=1e-12)
    assert (m[stage]["accuracy"], m[stage]["f1"]) == (saved["accuracy"], saved["f1"])  # returned = written
    assert len(pred) == m["data"]["eval_examples"] == 48
