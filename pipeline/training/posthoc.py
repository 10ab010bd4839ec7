"""After fit, what ships: the tail's weight average (`prune.average_tail`), a vocabulary trimmed to
the task's tokens (`prune.vocab`) and a decision threshold fitted on held-out train rows
(`prune.calibrate`). Each first scores the run without it on dev: a paired control, never used to choose.

Tail averaging: the student that ships is the mean of its weights over the fixed-sparsity tail, not
the last step's. At 95% on MRPC the dev accuracy of the tail's epochs (11-16 of 16) spans 76.0 to
80.9 with no trend (profiles/mrpc/recipes/base95/seeds/95-s*), so the last step is one draw from a wide spread.
Averaging the weights visited along the tail (stochastic weight averaging, Izmailov et al. 2018)
trades that draw for their centre. Only tail steps are averaged: the masks no longer move there, and
INC applies them before this hook runs, so a pruned weight is zero at every averaged step and the
average keeps the sparsity. The average is a running mean in fp32 and travels in checkpoints.

Calibration: every MRPC student kasp has measured loses its accuracy on the negative class. On dev
the teacher answers "paraphrase" for 313 of 408 pairs, the profile's 95% students for 357 to 360:
they lose 28-30 true negatives and gain some true positives back (README, "Where the accuracy
goes"). On its own distillation rows the student matches the teacher, whose outputs there are nearly
the labels, so the shift cannot be seen on them: it is measured on the train split named by
`selection_split`, kept out of distillation (and refused where the student starts from the teacher's
weights or head, which saw it). One number is fitted, a shift of the positive class's logit that
maximises the task's headline score on those rows; among ties the one closest to 0 wins (then the
lower), so a student that needs none keeps its threshold. It is fitted on rank 0 after finalize, on
the weights that ship (vocabulary trimmed, if asked), and goes into the classifier's bias, so the
saved, exported and compiled models carry it. Two-class tasks only. Dev is read only for the paired
control, never to fit.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.core.tasks import compute_metrics
from pipeline.training import loop


class TailAverage:
    """A running mean of `model`'s trainable weights over the optimizer steps after `after_step`
    (counted from 1), hooked on `optimizer.step` after INC's hook. Wraps fit()'s other extra state
    (`inner`: INC's pruner) so both are checkpointed together."""

    def __init__(self, model, optimizer, after_step: int, inner):
        self.params = {n: q for n, q in model.named_parameters() if q.requires_grad}
        self.after_step, self.inner = after_step, inner
        self.step, self.count, self.mean = 0, 0, {}
        inner_step = optimizer.step

        def step(*args, **kwargs):
            out = inner_step(*args, **kwargs)
            self.observe()
            return out

        optimizer.step = step

    @torch.no_grad()
    def observe(self) -> None:
        self.step += 1
        if self.step <= self.after_step:
            return
        self.count += 1
        for n, q in self.params.items():
            if n not in self.mean:
                self.mean[n] = q.detach().float().clone()
            else:  # in place: no temporary the size of the model at every tail step
                self.mean[n].lerp_(q.detach().float(), 1.0 / self.count)

    @torch.no_grad()
    def apply(self) -> int:
        """Put the mean into the model; returns how many steps it averaged. An empty tail is an error,
        not a quiet return of the last step's weights."""
        if not self.count:
            raise RuntimeError(
                f"prune.average_tail: no step after the last mask update (step {self.after_step}) "
                f"to average in {self.step} steps; lower prune.end or add epochs"
            )
        for n, q in self.params.items():
            q.copy_(self.mean[n].to(q.dtype))
        return self.count

    def state_dict(self) -> dict:
        return {
            "inner": self.inner.state_dict(),
            "step": self.step,
            "count": self.count,
            "mean": dict(self.mean),
        }  # saved at once by the checkpoint: no copy needed

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state["inner"])
        self.step, self.count = state["step"], state["count"]
        self.mean = {n: t.to(self.params[n].device) for n, t in state["mean"].items()}


def check_task(meta: dict) -> None:
    """A threshold exists only between two classes; refuse other tasks before any model loads."""
    if meta["problem_type"] != "classification" or meta["num_labels"] != 2:
        raise ValueError(
            f"prune.calibrate = 'train_split' needs a two-class task; {meta.get('task')!r} is "
            f"{meta['problem_type']} with {meta['num_labels']} label(s); set prune.calibrate: none"
        )


def held_out(p: dict, meta: dict, train) -> tuple:
    """(rows to distil on, held-out train rows or None, the rows to select an epoch on or None, what
    metrics record): the split is carved for selection: train_split or calibrate: train_split."""
    if p["calibrate"] != "none":
        check_task(meta)
    rest, held, selection = loop.selection_sets(p, train, carve=p["calibrate"] != "none")
    return rest, held, held if p["selection"] == "train_split" else None, selection


def headline(margins: np.ndarray, labels: np.ndarray, metrics: list[str], shift: float) -> float:
    """The task's headline score when "positive" means margin > shift."""
    return shifted_scores(margins, labels, metrics, shift)["score"]


def shifted_scores(margins: np.ndarray, labels: np.ndarray, metrics: list[str], shift: float) -> dict:
    """The task's metrics when "positive" means margin > shift."""
    logits = np.stack([np.zeros_like(margins), margins - shift], axis=1)
    return compute_metrics(logits, labels, metrics, "classification")


def best_shift(margins: np.ndarray, labels: np.ndarray, metrics: list[str]) -> tuple[float, float, float]:
    """(shift, headline at shift 0, headline at shift): the shift of the positive-minus-negative logit
    margin that maximises the headline on these rows. Candidates are 0 and the midpoints between
    neighbouring margins; ties go to the smallest |shift|."""
    margins = np.asarray(margins, np.float64)
    edges = np.unique(margins)
    candidates = np.concatenate([[0.0], (edges[1:] + edges[:-1]) / 2, [edges[0] - 1.0, edges[-1] + 1.0]])
    best, best_score = 0.0, headline(margins, labels, metrics, 0.0)
    before = best_score
    for t in sorted(candidates, key=abs):
        score = headline(margins, labels, metrics, float(t))
        if score > best_score + 1e-12:
            best, best_score = float(t), score
    return best, before, best_score


def apply_shift(model, shift: float) -> None:
    """Lower the positive class's bias by `shift`, so margin > shift becomes the new margin > 0."""
    bias = getattr(getattr(model, "classifier", None), "bias", None)
    if bias is None:
        raise ValueError("prune.calibrate: the student has no classifier.bias to carry the shift")
    with torch.no_grad():
        bias[1] -= shift


def calibrate(model, held, meta: dict, batch_size: int, seed: int) -> dict:
    """Fit and apply the shift on the held-out rows; what metrics record of it."""
    logits = loop.predict(model, held, batch_size).astype(np.float64)
    shift, before, _ = best_shift(logits[:, 1] - logits[:, 0], held.labels, meta["metrics"])
    apply_shift(model, shift)
    after = loop.evaluate(model, held, meta, batch_size)[
        "score"
    ]  # the shifted model itself, in its own dtype
    return {
        "split": "train_split",
        "split_size": len(held),
        "split_seed": seed,
        "logit_shift": round(shift, 6),
        "held_out_score_before": round(before, 6),
        "held_out_score_after": round(after, 6),
    }


def apply_average(averagers: list, student, dev, meta: dict, p: dict, main: bool) -> dict | None:
    """With average_tail: the last step's dev scores on rank 0 (the paired comparison, never a choice),
    then the tail's mean weights into the student on every rank."""
    if not averagers:
        return None
    last = loop.evaluate(student, dev, meta, p["eval_batch_size"]) if main else None
    return {"steps": averagers[0].apply(), "last_step_scores": last}


def apply_vocab(p: dict, student, train, dev, meta: dict, tokenizer) -> dict | None:
    """With vocab: task, on rank 0 after finalize: keep the word-embedding rows of the specials, the first
    vocab_core ids and every id of `train` (pipeline.core.vocab). Dev gives the out-of-vocabulary rate
    and the scores before and after (the paired control); it never chooses what is kept."""
    if p["vocab"] == "full":
        return None
    from pipeline.core import vocab

    if tokenizer.unk_token_id is None:
        raise ValueError(
            "prune.vocab = 'task' maps dropped tokens to [UNK], and this tokenizer has none; "
            "set prune.vocab: full"
        )
    specials = tokenizer.all_special_ids
    full = vocab.word_embeddings(student).weight
    kept = vocab.kept_ids(full.shape[0], specials, p["vocab_core"], train.ids)
    oov, counted = vocab.oov_fraction(dev.ids, kept, specials)
    before = loop.evaluate(student, dev, meta, p["eval_batch_size"])
    trimmed = vocab.trim(student, kept, tokenizer.unk_token_id)
    after = loop.evaluate(student, dev, meta, p["eval_batch_size"])
    return {
        "vocab": "task",
        "core_ids": p["vocab_core"],
        "rows_kept": len(kept),
        "rows_original": full.shape[0],
        "word_embedding_params_before": full.numel(),
        "word_embedding_params_after": trimmed.weight.numel(),
        "dev_oov_token_fraction": round(oov, 6),
        "dev_tokens_counted": counted,
        "untrimmed_scores": before,
        "trimmed_scores": after,
    }


def apply_calibration(p: dict, student, held, dev, meta: dict) -> dict | None:
    """With calibrate: train_split, on rank 0 (which alone saves) and after finalize and vocabulary trimming
    (the weights that ship): the student's dev scores without the shift (the paired control, never a
    choice), then the shift."""
    if p["calibrate"] == "none":
        return None
    before = loop.evaluate(student, dev, meta, p["eval_batch_size"])
    return {**calibrate(student, held, meta, p["eval_batch_size"], p["seed"]), "uncalibrated_scores": before}
