"""Task registry (GLUE and user files) and the one metric code path every stage uses.

Pure: no torch, no transformers. A GLUE task is data: where its TSVs live, which columns hold
text, pair and label, its label set and the metrics GLUE reports for it.
"""

from __future__ import annotations

import math

import numpy as np

# Columns are header names, or integer indices for CoLA, whose TSVs have no header.
GLUE = {
    "cola": dict(
        dir="CoLA",
        dev="dev.tsv",
        header=False,
        text=3,
        pair=None,
        label=1,
        labels=["0", "1"],
        metrics=["mcc", "accuracy"],
        hub="cola",
    ),
    "sst2": dict(
        dir="SST-2",
        dev="dev.tsv",
        header=True,
        text="sentence",
        pair=None,
        label="label",
        labels=["0", "1"],
        metrics=["accuracy"],
        hub="sst2",
    ),
    "mrpc": dict(
        dir="MRPC",
        dev="dev.tsv",
        header=True,
        text="#1 String",
        pair="#2 String",
        label="Quality",
        labels=["0", "1"],
        metrics=["accuracy", "f1"],
        hub="mrpc",
    ),
    "stsb": dict(
        dir="STS-B",
        dev="dev.tsv",
        header=True,
        text="sentence1",
        pair="sentence2",
        label="score",
        labels=None,
        metrics=["pearson", "spearman"],
        hub="stsb",
    ),
    "qqp": dict(
        dir="QQP",
        dev="dev.tsv",
        header=True,
        text="question1",
        pair="question2",
        label="is_duplicate",
        labels=["0", "1"],
        metrics=["accuracy", "f1"],
        hub="qqp",
    ),
    "mnli": dict(
        dir="MNLI",
        dev="dev_matched.tsv",
        header=True,
        text="sentence1",
        pair="sentence2",
        label="gold_label",
        labels=["contradiction", "entailment", "neutral"],
        metrics=["accuracy"],
        hub="mnli",
    ),
    "qnli": dict(
        dir="QNLI",
        dev="dev.tsv",
        header=True,
        text="question",
        pair="sentence",
        label="label",
        labels=["entailment", "not_entailment"],
        metrics=["accuracy"],
        hub="qnli",
    ),
    "rte": dict(
        dir="RTE",
        dev="dev.tsv",
        header=True,
        text="sentence1",
        pair="sentence2",
        label="label",
        labels=["entailment", "not_entailment"],
        metrics=["accuracy"],
        hub="rte",
    ),
    "wnli": dict(
        dir="WNLI",
        dev="dev.tsv",
        header=True,
        text="sentence1",
        pair="sentence2",
        label="label",
        labels=["0", "1"],
        metrics=["accuracy"],
        hub="wnli",
    ),
}
# The hub's MNLI has no plain "validation" split.
HUB_DEV_SPLIT = {"mnli": "validation_matched"}
METRICS = ("accuracy", "f1", "mcc", "pearson", "spearman")
SCORES = (*METRICS, "score")  # what compute_metrics can return
QUALITY = "quality.json"  # teacher_quality() in teacher.out_dir: prune refuses a teacher no better than the baseline


def normalize_task(name: str) -> str:
    """'SST-2', 'sst2' and 'STS_B' all name a registry key; unknown names list the valid ones."""
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in GLUE:
        raise KeyError(f"unknown GLUE task {name!r}; allowed: {', '.join(GLUE)}")
    return key


# ---- metrics: one implementation, checked against scikit-learn/scipy in tests ----


def accuracy(pred, gold) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(gold)))


def f1(pred, gold, positive: int = 1) -> float:
    pred, gold = np.asarray(pred), np.asarray(gold)
    tp = float(np.sum((pred == positive) & (gold == positive)))
    fp = float(np.sum((pred == positive) & (gold != positive)))
    fn = float(np.sum((pred != positive) & (gold == positive)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def mcc(pred, gold) -> float:
    """Matthews correlation, multi-class form (Gorodkin's R_K), equal to the binary formula for two classes."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    classes = np.union1d(pred, gold)
    conf = np.array([[np.sum((gold == a) & (pred == b)) for b in classes] for a in classes], dtype=np.float64)
    t, p, c, s = conf.sum(1), conf.sum(0), np.trace(conf), conf.sum()
    denom = math.sqrt((s * s - p @ p) * (s * s - t @ t))
    return 0.0 if denom == 0 else float((c * s - t @ p) / denom)


def pearson(pred, gold) -> float:
    pred, gold = np.asarray(pred, np.float64), np.asarray(gold, np.float64)
    pc, gc = pred - pred.mean(), gold - gold.mean()
    denom = math.sqrt(float(pc @ pc) * float(gc @ gc))
    return 0.0 if denom == 0 else float(pc @ gc / denom)


def _ranks(x) -> np.ndarray:
    """Average ranks (ties share the mean rank), as scipy.stats.rankdata does."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    xs = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(pred, gold) -> float:
    return pearson(_ranks(pred), _ranks(gold))


_METRIC_FNS = {"accuracy": accuracy, "f1": f1, "mcc": mcc, "pearson": pearson, "spearman": spearman}


def predictions(logits, problem_type: str) -> np.ndarray:
    logits = np.asarray(logits)
    return logits[:, 0] if problem_type == "regression" else logits.argmax(-1)


def headline_metrics(metrics: list[str]) -> list[str]:
    """GLUE's headline: MCC alone where it is reported (CoLA), else the mean of the task's metrics
    (accuracy and F1 for MRPC/QQP, Pearson and Spearman for STS-B, accuracy elsewhere)."""
    return ["mcc"] if "mcc" in metrics else list(metrics)


def compute_metrics(logits, labels, metrics: list[str], problem_type: str) -> dict:
    """Task metrics from raw logits and `score`, the GLUE headline of them (headline_metrics)."""
    pred = predictions(logits, problem_type)
    out = {name: _METRIC_FNS[name](pred, labels) for name in metrics}
    out["score"] = float(np.mean([out[m] for m in headline_metrics(metrics)]))
    return out


def baseline_scores(train_labels, dev_labels, metrics: list[str], problem_type: str) -> dict:
    """What a model that learned nothing scores on dev: always the majority class of train (accuracy
    = that class's share, MCC 0), or always train's mean for regression (correlations 0)."""
    train_labels, n = np.asarray(train_labels), len(dev_labels)
    if problem_type == "regression":
        logits = np.full((n, 1), float(np.mean(train_labels)))
    else:
        k = int(max(np.max(train_labels), np.max(dev_labels))) + 1
        logits = np.tile(np.eye(k)[int(np.bincount(train_labels.astype(np.int64)).argmax())], (n, 1))
    return compute_metrics(logits, dev_labels, metrics, problem_type)


def teacher_quality(scores: dict, baseline: dict, min_margin: float) -> dict:
    """Whether the teacher is worth distilling from: its dev score against always answering the
    majority class (or the mean), by at least teacher.min_margin."""
    margin = round(scores["score"] - baseline["score"], 6)
    return {
        "score": scores["score"],
        "baseline_score": baseline["score"],
        "margin_over_baseline": margin,
        "min_margin": min_margin,
        "beats_baseline": margin >= min_margin,
    }
