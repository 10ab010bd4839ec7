"""STS-B-style regression through training: a user file with `metrics: [pearson, spearman]` is a one-output
regression task; teacher and prune train on it and report Pearson and Spearman of the saved models, which
scipy recomputes here from the reloaded models' dev predictions."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from pipeline import data, eval as eval_, prune, teacher
from pipeline.core.models import load_trained
from pipeline.core.tokens import Tokens, feeds
from pipeline.training.loop import predict
from tests.conftest import demo_rows


def write_pairs(path: Path, lines: list[str]) -> None:
    """Sentence pairs scored 0-5 like STS-B: 4 when both have the same sentiment, plus a length term
    (rounded to 0.5, so the gold scores have ties, as STS-B's do)."""
    rows = [line.rsplit("\t", 1) for line in lines]
    out = ["sentence1\tsentence2\tscore"]
    for (a, la), (b, lb) in zip(rows, rows[1:]):
        score = 4.0 * (la == lb) + round(2 * min(len(a.split()), 20) / 20) / 2
        out.append(f"{a}\t{b}\t{score}")
    path.write_text("\n".join(out) + "\n")


@pytest.fixture
def regression(project, tmp_path):
    params, write = project
    write_pairs(tmp_path / "train.tsv", demo_rows("train", 97))
    write_pairs(tmp_path / "dev.tsv", demo_rows("dev", 49))
    params["data"].update(
        train_file=str(tmp_path / "train.tsv"),
        eval_file=str(tmp_path / "dev.tsv"),
        text_column="sentence1",
        text_pair_column="sentence2",
        label_column="score",
        labels=None,
        metrics=["pearson", "spearman"],
    )
    params["teacher"]["epochs"] = 2
    params["prune"].update(target_sparsity=0.5, epochs=2)
    path = write(params)
    return params, path, {s.__name__.split(".")[-1]: s.main(path) for s in (data, teacher, prune)}


def test_regression_trains_and_reports_correlations(regression, tmp_path):
    params, path, m = regression
    meta = json.loads((Path(params["data"]["out_dir"]) / "meta.json").read_text())
    assert (meta["problem_type"], meta["num_labels"], meta["labels"]) == ("regression", 1, None)
    dev = Tokens(Path(params["data"]["out_dir"]) / "eval.safetensors")
    assert dev.labels.dtype == np.float32 and len(dev) == 48 and len(np.unique(dev.labels)) < len(dev)  # ties
    for stage in ("teacher", "prune"):
        model = load_trained(params[stage]["out_dir"])
        assert model.config.problem_type == "regression" and model.num_labels == 1
        pred = predict(model, dev, params[stage]["eval_batch_size"])[:, 0]
        assert pred.std() > 0
        saved = json.loads((tmp_path / "metrics" / f"{stage}.json").read_text())
        want = {
            "pearson": stats.pearsonr(pred, dev.labels)[0],
            "spearman": stats.spearmanr(pred, dev.labels)[0],
        }
        assert {k: saved[k] for k in want} == pytest.approx(want, abs=1e-6), stage
        assert saved["score"] == pytest.approx((want["pearson"] + want["spearman"]) / 2, abs=1e-6)
        assert "accuracy" not in saved and "f1" not in saved
    assert m["prune"]["teacher"]["pearson"] == pytest.approx(m["teacher"]["pearson"], abs=1e-6)
    assert m["prune"]["delta_pearson"] == pytest.approx(
        m["prune"]["pearson"] - m["teacher"]["pearson"], abs=1e-5
    )
    assert abs(m["prune"]["encoder_linear_sparsity"] - 0.5) <= 0.005
    assert [h["epoch"] for h in m["teacher"]["history"]] == [1, 2]
    assert all({"pearson", "spearman"} <= set(h) for h in m["teacher"]["history"])

    # eval scores regression from the first logit too: recomputed from PyTorch FP32 on eval's own batches
    # (the tiny regressors' outputs vary little, so another batching moves Pearson in the 4th decimal)
    e = eval_.main(torch_only(params, path))
    for r in e["results"]:
        model = load_trained(params["teacher" if r["model"] == "teacher" else "prune"]["out_dir"]).eval()
        with torch.inference_mode():
            pred = np.concatenate(
                [
                    model(**{k: torch.from_numpy(v) for k, v in f.items()}).logits.numpy()
                    for f in feeds(dev, params["eval"]["batch_size"])
                ]
            )[:, 0]
        assert r["pearson"] == pytest.approx(stats.pearsonr(pred, dev.labels)[0], abs=1e-6), r["model"]
        assert r["spearman"] == pytest.approx(stats.spearmanr(pred, dev.labels)[0], abs=1e-6), r["model"]
    assert {r["model"] for r in e["results"]} == {"teacher", "student"}


def torch_only(params: dict, path: str) -> str:
    import yaml

    params["eval"]["backends"] = ["torch-fp32"]
    Path(path).write_text(yaml.safe_dump(params))
    return path
