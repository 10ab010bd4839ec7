"""Every stage's main() in sequence on the tiny model and tiny data (the `built` fixture)."""
import json
from pathlib import Path

from pipeline.core.models import load_trained
from pipeline.training.sparsity import summarize


def test_every_stage_runs_and_writes_metrics(built):
    params, _, m = built
    root = Path(params["data"]["out_dir"]).parent
    assert m["data"]["train_examples"] == 96 and m["data"]["eval_examples"] == 48
    assert 0.0 <= m["teacher"]["accuracy"] <= 1.0 and m["teacher"]["train_samples_per_s"] > 0
    assert abs(m["prune"]["encoder_linear_sparsity"] - 0.8) <= 0.005
    assert m["prune"]["model_sparsity"] < m["prune"]["encoder_linear_sparsity"]  # embeddings are never pruned
    for stage in m:
        saved = json.loads((root / "metrics" / f"{stage}.json").read_text())
        assert "env" in saved and saved["env"]["versions"]["torch"]
    reloaded = load_trained(params["prune"]["out_dir"])
    assert abs(summarize(reloaded)["encoder_linear_sparsity"] - m["prune"]["encoder_linear_sparsity"]) < 1e-9
    assert set(m["export"]["models"]) == {"teacher", "student"}
    assert all((Path(params["compile"]["bundle_dir"]) / f"{n}-int8" / "manifest.json").is_file()
               for n in ("teacher", "student"))
