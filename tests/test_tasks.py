"""The one metric code path, checked against scikit-learn and scipy on fixed inputs."""

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from pipeline.core.tasks import GLUE, compute_metrics, mcc, normalize_task, spearman

RNG = np.random.default_rng(7)
PRED = RNG.integers(0, 3, 200)
GOLD = np.where(RNG.random(200) < 0.6, PRED, RNG.integers(0, 3, 200))


def test_classification_metrics_match_sklearn():
    bp, bg = PRED % 2, GOLD % 2
    logits = np.eye(2)[bp]
    m = compute_metrics(logits, bg, ["accuracy", "f1", "mcc"], "classification")
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(bg, bp))
    assert m["f1"] == pytest.approx(skm.f1_score(bg, bp))
    assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(bg, bp))
    assert m["score"] == m["mcc"]  # GLUE: where MCC is reported (CoLA) it is the headline alone
    m = compute_metrics(logits, bg, ["accuracy", "f1"], "classification")
    assert m["score"] == pytest.approx((m["accuracy"] + m["f1"]) / 2)  # MRPC/QQP: mean of accuracy and F1


def test_multiclass_mcc_matches_sklearn():
    assert mcc(PRED, GOLD) == pytest.approx(skm.matthews_corrcoef(GOLD, PRED))
    assert mcc(np.zeros(5), np.zeros(5)) == 0.0  # degenerate: sklearn also returns 0


def test_regression_metrics_match_scipy():
    gold = np.round(RNG.random(300) * 5, 1)  # many ties, as in STS-B
    pred = gold + RNG.normal(0, 1, 300)
    m = compute_metrics(pred[:, None], gold, ["pearson", "spearman"], "regression")
    assert m["pearson"] == pytest.approx(stats.pearsonr(pred, gold)[0])
    assert m["spearman"] == pytest.approx(stats.spearmanr(pred, gold)[0])
    assert spearman(gold, gold) == pytest.approx(1.0)


def test_task_names():
    assert normalize_task("SST-2") == "sst2" and normalize_task("STS_B") == "stsb"
    with pytest.raises(KeyError, match="allowed: cola"):
        normalize_task("imdb")
    assert len(GLUE) == 9
