"""Where a two-class model's dev accuracy goes: its confusion, how well it ranks, and what the best
threshold would give. A diagnostic that chooses nothing: the best threshold here is found on the dev
set it is scored on, so it is a ceiling for prune.calibrate (which fits on held-out train rows), never
a model to ship.

    python -m tools.diagnostics.threshold MODEL_DIR [MODEL_DIR ...] --data DATA_DIR [--held-out 0.1 --held-seed 42]

With --held-out, each model also gets prune.calibrate's shift (which maximises the task's headline score;
best_threshold maximises accuracy) fitted on that seeded share of train, the split `selection_split`
carves, and its dev scores with it. That estimates calibration only for a model that never trained on
those rows and carries no shift yet: a teacher or an uncalibrated student trained with selection:
train_split and the same share and seed (teacher.seed or prune.seed).
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.metrics import roc_auc_score


def confusion(margins: np.ndarray, labels: np.ndarray) -> dict:
    """Counts at the model's own threshold (positive when margin > 0)."""
    pred, pos = margins > 0, labels == 1
    return {
        "predicted_positive": int(pred.sum()),
        "true_positive": int((pred & pos).sum()),
        "true_negative": int((~pred & ~pos).sum()),
        "accuracy": float((pred == pos).mean()),
    }


def diagnose(margins: np.ndarray, labels: np.ndarray) -> dict:
    """Counts, ranking, and the best accuracy any threshold gives on these rows (prune.calibrate's own
    search, here on accuracy; among ties the threshold closest to 0)."""
    from pipeline.training.posthoc import best_shift

    at, _, best = best_shift(np.asarray(margins, np.float64), labels, ["accuracy"])
    return {
        **confusion(margins, labels),
        "roc_auc": float(roc_auc_score(labels, margins)),
        "best_threshold_accuracy": best,
        "best_threshold": at,
    }


def calibrated(model, train, dev, dev_margins: np.ndarray, meta: dict, fraction: float, seed: int) -> dict:
    """prune.calibrate's shift fitted on the held-out share of train; dev scores with it."""
    from pipeline.core.tokens import split_off
    from pipeline.training.loop import predict
    from pipeline.training.posthoc import best_shift, shifted_scores

    _, held = split_off(train, fraction, seed)
    logits = predict(model, held, 64).astype(np.float64)
    shift, _, _ = best_shift(logits[:, 1] - logits[:, 0], held.labels, meta["metrics"])
    scores = shifted_scores(dev_margins, dev.labels, meta["metrics"], shift)
    return {
        "held_out_rows": len(held),
        "held_out_shift": shift,
        **{f"calibrated_{k}": v for k, v in scores.items()},
    }


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="model folders kasp saved (teacher, student)")
    ap.add_argument("--data", required=True, help="the data stage's out_dir (tokenized splits and meta.json)")
    ap.add_argument("--held-out", type=float, help="share of train to fit prune.calibrate's shift on")
    ap.add_argument("--held-seed", type=int, help="the split's seed (teacher.seed or prune.seed)")
    args = ap.parse_args(argv)
    if args.held_out is not None and not (0 < args.held_out < 1 and args.held_seed is not None):
        ap.error(f"--held-out {args.held_out}: needs a share of train in (0, 1) and --held-seed")
    from pipeline.core.models import load_trained
    from pipeline.core.tokens import load_inputs
    from pipeline.training.loop import predict

    meta, train, dev = load_inputs(args.data)
    if meta["problem_type"] != "classification" or meta["num_labels"] != 2:
        raise SystemExit(
            f"{args.data}: tools.diagnostics.threshold needs a two-class task, "
            f"not {meta['num_labels']} label(s)"
        )
    out = []
    for d in args.models:
        model = load_trained(d).eval()
        logits = predict(model, dev, 64).astype(np.float64)
        margins = logits[:, 1] - logits[:, 0]
        out.append({"model": d, **diagnose(margins, dev.labels)})
        if args.held_out is not None:
            out[-1].update(calibrated(model, train, dev, margins, meta, args.held_out, args.held_seed))
        print(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in out[-1].items()))
    return out


if __name__ == "__main__":
    main()
