"""The training loop shared by `teacher` and `prune`: dynamic padding, length-grouped batches,
per-epoch dev evaluation, best-checkpoint keeping, and resumable checkpoints.

A checkpoint holds model, optimizer, scheduler, step, RNG and any extra state (the pruner's);
it is only reused when its fingerprint (params + inputs) matches the run asking for it.
"""
from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.common import fingerprint, sha256_file
from pipeline.tasks import compute_metrics

CKPT = "state.pt"
BEST = "best.safetensors"


class Tokens:
    """A tokenized split saved by the data stage: ragged ids as flat arrays plus offsets."""

    def __init__(self, path: str | Path, pad_id: int = 0):
        from safetensors.numpy import load_file

        a = load_file(str(path))
        self.ids, self.types, self.offsets, self.labels = a["input_ids"], a["token_type_ids"], a["offsets"], a["labels"]
        self.lengths = np.diff(self.offsets)
        self.pad_id = pad_id

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, idx) -> dict:
        """Pad to the longest row in this batch only (dynamic padding)."""
        width = int(self.lengths[idx].max())
        ids = np.full((len(idx), width), self.pad_id, np.int64)
        types = np.zeros((len(idx), width), np.int64)
        mask = np.zeros((len(idx), width), np.int64)
        for row, i in enumerate(idx):
            a, b = self.offsets[i], self.offsets[i + 1]
            ids[row, : b - a], types[row, : b - a], mask[row, : b - a] = self.ids[a:b], self.types[a:b], 1
        return {"input_ids": torch.from_numpy(ids), "token_type_ids": torch.from_numpy(types),
                "attention_mask": torch.from_numpy(mask), "labels": torch.from_numpy(self.labels[idx])}


def length_grouped_batches(lengths, batch_size: int, seed: int, group: bool = True, mega: int = 50) -> list:
    """Shuffle, then sort within windows of `mega` batches so each batch holds similar lengths.

    Batch order is shuffled again, so training still sees lengths in random order; the longest
    batch goes first so an out-of-memory shows up at step one, not mid-epoch.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    if group:
        win = batch_size * mega
        order = np.concatenate([sorted(order[i:i + win], key=lambda j: -lengths[j])
                                for i in range(0, len(order), win)]) if len(order) else order
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if group and len(batches) > 1:
        first = max(range(len(batches)), key=lambda b: lengths[batches[b]].max())
        rest = [batches[b] for b in rng.permutation(len(batches)) if b != first]
        batches = [batches[first]] + rest
    return batches


@torch.no_grad()
def predict(model, ds: Tokens, batch_size: int) -> np.ndarray:
    """Logits in dataset order; rows are batched by length so padding stays small."""
    model.eval()
    order = np.argsort(-ds.lengths, kind="stable")
    out = np.zeros((len(ds), model.config.num_labels), np.float32)
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        b = ds.batch(idx)
        b.pop("labels")
        out[idx] = model(**b).logits.float().numpy()
    return out


def evaluate(model, ds: Tokens, meta: dict, batch_size: int) -> dict:
    logits = predict(model, ds, batch_size)
    return compute_metrics(logits, ds.labels, meta["metrics"], meta["problem_type"])


def make_optimizer(model, p: dict, total_steps: int):
    from transformers import get_linear_schedule_with_warmup

    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)  # biases and LayerNorm: no decay
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": p["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}], lr=p["learning_rate"])
    sched = get_linear_schedule_with_warmup(opt, int(p["warmup_ratio"] * total_steps), total_steps)
    return opt, sched


def save_checkpoint(ckpt_dir: Path, state: dict) -> None:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_dir / f".{CKPT}.tmp-{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, ckpt_dir / CKPT)


def load_checkpoint(ckpt_dir: Path, fp: str) -> dict | None:
    """The checkpoint if it belongs to this run (same fingerprint); a stale one is removed."""
    path = ckpt_dir / CKPT
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != fp:
        print(f"[{ckpt_dir}] checkpoint is from other params or inputs; starting fresh")
        shutil.rmtree(ckpt_dir)
        return None
    return state


def run_fingerprint(stage: str, p: dict, data_dir: Path, *extra) -> str:
    """What a checkpoint must match to be resumed: the stage's params, the tokenized data bytes and
    the training code. Anything else changed means the saved progress belongs to another run."""
    code = {f.name: sha256_file(f) for f in sorted(Path(__file__).parent.glob("*.py"))}
    data = {s: sha256_file(Path(data_dir) / f"{s}.safetensors") for s in ("train", "eval")}
    return fingerprint(stage, p, data, code, *extra)


def clear_checkpoint(p: dict) -> None:
    """Called once the stage's output is safely in place: a finished run leaves nothing to resume."""
    shutil.rmtree(p["checkpoint_dir"], ignore_errors=True)


class NoExtra:
    """Extra state carried through checkpoints (the pruner uses this)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def fit(model, train: Tokens, dev: Tokens, meta: dict, p: dict, loss_fn, *, stage: str, fp: str,
        prepare=None, eligible=lambda step: True, make_log=None) -> dict:
    """Train with `loss_fn(model, batch) -> (loss, parts)`; returns history, timing and best metrics.

    `prepare(optimizer, total_steps)` may wrap the optimizer (pruning) and returns the extra-state
    object; `eligible(step)` says whether a model at `step` may become the kept "best" one;
    `make_log(resumed) -> (log(step, values), close())` opens the training-curve logger.
    """
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    ckpt_dir = Path(p["checkpoint_dir"])
    steps_per_epoch = math.ceil(len(train) / p["batch_size"])
    total = steps_per_epoch * p["epochs"]
    opt, sched = make_optimizer(model, p, total)
    extra = prepare(opt, total) if prepare else NoExtra()
    state = load_checkpoint(ckpt_dir, fp)
    step, history, best, timing = 0, [], None, {"train_s": 0.0, "samples": 0, "tokens": 0, "padded_tokens": 0}
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        extra.load_state_dict(state["extra"])
        torch.set_rng_state(state["rng"])
        step, history, best, timing = state["step"], state["history"], state["best"], state["timing"]
        print(f"[{stage}] resuming from step {step}/{total}")
    resumed_from = step
    log, close_log = make_log(state is not None) if make_log else (None, lambda: None)

    def checkpoint():
        save_checkpoint(ckpt_dir, {"fingerprint": fp, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                   "scheduler": sched.state_dict(), "extra": extra.state_dict(), "step": step,
                                   "rng": torch.get_rng_state(), "history": history, "best": best,
                                   "timing": timing})

    bar = tqdm(total=total, initial=step, desc=stage, disable=not p["progress"], mininterval=2)
    for epoch in range(step // steps_per_epoch, p["epochs"]):
        batches = length_grouped_batches(train.lengths, p["batch_size"], p["seed"] + epoch, p["group_by_length"])
        model.train()
        for idx in batches[step - epoch * steps_per_epoch:]:
            t0 = time.perf_counter()
            b = train.batch(idx)
            loss, parts = loss_fn(model, b)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), p["max_grad_norm"])
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            timing["train_s"] += time.perf_counter() - t0
            timing["samples"] += len(idx)
            timing["tokens"] += int(b["attention_mask"].sum())
            timing["padded_tokens"] += b["input_ids"].numel()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            if log and step % 10 == 0:
                log(step, {"train/loss": loss.item(), **{f"train/{k}": v for k, v in parts.items()}})
            if step % p["checkpoint_every_steps"] == 0 and step % steps_per_epoch:
                checkpoint()
        scores = evaluate(model, dev, meta, p["eval_batch_size"])
        history.append({"epoch": epoch + 1, "step": step, **scores})
        if log:
            log(step, {f"eval/{k}": v for k, v in scores.items()})
        if eligible(step) and (best is None or scores["score"] > best["score"]):
            best = {"epoch": epoch + 1, "step": step, **scores}
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt_dir / BEST))
        checkpoint()
        model.train()
    bar.close()
    close_log()
    if best is not None:
        model.load_state_dict(load_file(str(ckpt_dir / BEST)))
    tt = max(timing["train_s"], 1e-9)
    return {"history": history, "best": best, "steps": total, "resumed_from_step": resumed_from,
            "train_time_s": round(timing["train_s"], 2),
            "train_samples_per_s": round(timing["samples"] / tt, 2),
            "train_tokens_per_s": round(timing["tokens"] / tt, 1),
            "padding_efficiency": round(timing["tokens"] / max(timing["padded_tokens"], 1), 4),
            "extra": extra}


def feeds(ds: Tokens, batch_size: int, limit: int | None = None) -> list[dict]:
    """Dataset-order numpy batches for runtimes (no labels), dynamically padded."""
    n = min(len(ds), limit or len(ds))
    out = []
    for i in range(0, n, batch_size):
        b = ds.batch(np.arange(i, min(i + batch_size, n)))
        b.pop("labels")
        out.append({k: v.numpy() for k, v in b.items()})
    return out
