"""Every stage's main() in sequence on the tiny model and tiny data."""
import json
from pathlib import Path

from pipeline import data, prune, teacher


def test_data_teacher_prune(project):
    params, write = project
    path = write()
    d = data.main(path)
    assert d["train_examples"] == 96 and d["eval_examples"] == 48
    t = teacher.main(path)
    assert 0.0 <= t["accuracy"] <= 1.0 and t["train_samples_per_s"] > 0
    assert (Path(params["teacher"]["out_dir"]) / "model.safetensors").is_file()
    s = prune.main(path)
    assert abs(s["encoder_linear_sparsity"] - 0.8) <= 0.005
    assert s["model_sparsity"] < s["encoder_linear_sparsity"]  # embeddings are never pruned
    saved = json.loads(Path("metrics/prune.json").read_text())
    assert saved["achieved_sparsity"] == s["achieved_sparsity"] and "env" in saved
    from pipeline.models import load_trained
    from pipeline.sparsity import summarize

    reloaded = load_trained(params["prune"]["out_dir"])
    assert abs(summarize(reloaded)["encoder_linear_sparsity"] - s["encoder_linear_sparsity"]) < 1e-9
