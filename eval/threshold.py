"""Where a two-class model's dev accuracy goes: its confusion, how well it ranks, and what the best
threshold would give. A diagnostic that chooses nothing: the best threshold here is found on the dev
set it is scored on, so it is a ceiling for prune.calibrate (which fits on held-out train rows), never
a model to ship.

    python -m eval.threshold MODEL_DIR [MODEL_DIR ...] --data DATA_DIR
"""
from __future__ import annotations

import argparse

import numpy as np
from sklearn.metrics import roc_auc_score


def confusion(margins: np.ndarray, labels: np.ndarray) -> dict:
    """Counts at the model's own threshold (positive when margin > 0)."""
    pred, pos = margins > 0, labels == 1
    return {"predicted_positive": int(pred.sum()), "true_positive": int((pred & pos).sum()),
            "true_negative": int((~pred & ~pos).sum()), "accuracy": float((pred == pos).mean())}


def diagnose(margins: np.ndarray, labels: np.ndarray) -> dict:
    """Counts, ranking, and the best accuracy any threshold gives on these rows (prune.calibrate's own
    search, here on accuracy; among ties the threshold closest to 0)."""
    from pipeline.training.posthoc import best_shift

    at, _, best = best_shift(np.asarray(margins, np.float64), labels, ["accuracy"])
    return {**confusion(margins, labels), "roc_auc": float(roc_auc_score(labels, margins)),
            "best_threshold_accuracy": best, "best_threshold": at}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="model folders kasp saved (teacher, student)")
    ap.add_argument("--data", required=True, help="the data stage's out_dir (tokenized splits and meta.json)")
    args = ap.parse_args(argv)
    from pipeline.core.models import load_trained
    from pipeline.core.tokens import load_inputs
    from pipeline.training.loop import predict

    meta, _, dev = load_inputs(args.data)
    if meta["problem_type"] != "classification" or meta["num_labels"] != 2:
        raise SystemExit(f"{args.data}: eval.threshold needs a two-class task, not {meta['num_labels']} label(s)")
    out = []
    for d in args.models:
        logits = predict(load_trained(d).eval(), dev, 64).astype(np.float64)
        out.append({"model": d, **diagnose(logits[:, 1] - logits[:, 0], dev.labels)})
        print(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in out[-1].items()))
    return out


if __name__ == "__main__":
    main()
