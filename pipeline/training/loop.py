"""The training loop shared by `teacher` and `prune`: length-grouped batches, per-epoch dev
evaluation, best-epoch keeping, resumable checkpoints (pipeline.training.checkpoint) and training
curves for `dvc plots` (dvclive). Device, mixed precision and data parallelism come from an
Accelerate handle (pipeline.training.device); with several processes, rank 0 alone writes."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pipeline.core.tasks import compute_metrics
from pipeline.core.tokens import Tokens, split_off
from pipeline.training.checkpoint import NoExtra, load_checkpoint, save_checkpoint
from pipeline.training.device import shard
from pipeline.training.schedule import lr_lambda

BEST = "best.safetensors"
# What fit() reports about training that a stage's metrics keep.
TRAIN_KEYS = (
    "history",
    "steps",
    "resumed_from_step",
    "train_samples_per_s",
    "train_tokens_per_s",
    "padding_efficiency",
    "train_time_s",
    "train_device",
    "train_precision",
    "train_asked",
    "train_fallback",
    "world_size",
)
PHASES = ("forward_loss", "backward", "optimizer_inc")  # a step's parts, as train_step times them


def length_grouped_batches(lengths, batch_size: int, seed: int, group: bool = True, mega: int = 50) -> list:
    """Shuffle, then sort within windows of `mega` batches so each batch holds similar lengths.

    Batch order is shuffled again, so training still sees lengths in random order; the longest
    batch goes first so an out-of-memory shows up at step one, not mid-epoch.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    if group:
        win = batch_size * mega
        order = (
            np.concatenate(
                [sorted(order[i : i + win], key=lambda j: -lengths[j]) for i in range(0, len(order), win)]
            )
            if len(order)
            else order
        )
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if group and len(batches) > 1:
        first = max(range(len(batches)), key=lambda b: lengths[batches[b]].max())
        rest = [batches[b] for b in rng.permutation(len(batches)) if b != first]
        batches = [batches[first]] + rest
    return batches


@torch.no_grad()
def predict(model, ds: Tokens, batch_size: int, acc=None) -> np.ndarray:
    """Logits in dataset order; rows are batched by length so padding stays small. With `acc` (an
    Accelerator), each rank predicts every world-th batch on the plain model (no DDP collectives) and
    all ranks get every row."""
    model = acc.unwrap_model(model) if acc else model
    model.eval()
    rank, world = (acc.process_index, acc.num_processes) if acc else (0, 1)
    device = next(model.parameters()).device
    order = np.argsort(-ds.lengths, kind="stable")
    out = np.zeros((len(ds), model.config.num_labels), np.float32)
    for i in range(rank * batch_size, len(order), batch_size * world):
        idx = order[i : i + batch_size]
        b = ds.batch(idx)
        b.pop("labels")
        out[idx] = model(**{k: v.to(device) for k, v in b.items()}).logits.float().cpu().numpy()
    if world > 1:
        from accelerate.utils import gather_object

        for r, part in enumerate(gather_object([out])):
            for i in range(r * batch_size, len(order), batch_size * world):
                out[order[i : i + batch_size]] = part[order[i : i + batch_size]]
    return out


def evaluate(model, ds: Tokens, meta: dict, batch_size: int, acc=None) -> dict:
    logits = predict(model, ds, batch_size, acc)
    return compute_metrics(logits, ds.labels, meta["metrics"], meta["problem_type"])


def make_optimizer(model, p: dict, total_steps: int, schedule=None):
    """AdamW and its LambdaLR; `schedule(total_steps) -> lr_lambda` (pipeline.training.schedule), default
    warm-up then linear decay."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)  # biases and LayerNorm: no decay
    # fused: one kernel over all parameters; on 2 CPU cores it is ~5x faster than the per-tensor loop
    # (MiniLM's 22M parameters: 16 against 76 ms a step), the same update up to float rounding.
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": p["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=p["learning_rate"],
        fused=True,
    )
    fn = (schedule or (lambda total: lr_lambda(p, total, pruning=False)))(total_steps)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, fn)


def selection_sets(p: dict, train: Tokens, carve: bool = False) -> tuple[Tokens, Tokens | None, dict]:
    """(rows to train on, rows held out or None, what metrics record about it). The split is carved from
    train for `selection`: train_split (best epoch on it) or when `carve` (prune.calibrate fits on it);
    with selection: last the last epoch ships either way."""
    if p["selection"] == "last" and not carve:
        return train, None, {"selection": "last"}
    rest, held = split_off(train, p["selection_split"], p["seed"])
    return (
        rest,
        held,
        {
            "selection": p["selection"],
            "selection_split_size": len(held),
            "selection_seed": p["seed"],
            "train_rows_used": len(rest),
        },
    )


@dataclass
class Progress:
    """What a checkpoint carries besides the model, optimizer, scheduler and extra state."""

    step: int = 0
    history: list = field(default_factory=list)
    best: dict | None = None
    timing: dict = field(
        default_factory=lambda: {
            "train_s": 0.0,
            "samples": 0,
            "tokens": 0,
            "padded_tokens": 0,
            "epoch_loss": 0.0,
            "epoch_steps": 0,
        }
    )


def dvclive_logger(stage: str, resumed: bool, root: Path):
    """Step-wise training curves in root/dvclive/<stage> (beside metrics/); returns (log(step, dict), close())."""
    from dvclive import Live

    live = Live(
        dir=str(Path(root) / "dvclive" / stage), resume=resumed, save_dvc_exp=False, dvcyaml=None, report=None
    )

    def log(step: int, values: dict) -> None:
        live.step = step
        for k, v in values.items():
            live.log_metric(k, v)

    return log, live.end


def _restore(state: dict | None, model, opt, sched, extra) -> Progress:
    if not state:
        return Progress()
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    extra.load_state_dict(state["extra"])
    torch.set_rng_state(state["rng"])
    return Progress(state["step"], state["history"], state["best"], state["timing"])


def _resume(ckpt_dir: Path, fp: str, acc, parts: tuple, message: str) -> tuple[dict | None, Progress]:
    """Every rank loads the same checkpoint (or none); rank 0 removes a stale one once all have read."""
    state = load_checkpoint(ckpt_dir, fp, remove_stale=False)
    acc.wait_for_everyone()
    if acc.is_main_process and state is None:
        load_checkpoint(ckpt_dir, fp)
    pr = _restore(state, *parts)
    if state and acc.is_main_process:
        print(message.format(pr.step))
    return state, pr


def train_step(
    model,
    train: Tokens,
    idx,
    loss_fn,
    opt,
    sched,
    max_grad_norm: float,
    timing: dict,
    acc,
    phases: dict | None = None,
):
    """One step on this rank's rows `idx`; adds to `timing`, and with `phases` each phase's milliseconds
    (step_profile). Gradients are averaged over ranks in backward (DDP) and unscaled (fp16) before the
    clip, so INC's optimizer-step hook scores the same gradients on every rank."""
    t = [time.perf_counter()]
    b = {k: v.to(acc.device) for k, v in train.batch(idx).items()}
    with acc.autocast():
        loss, parts = loss_fn(model, b, idx)
    t.append(time.perf_counter())
    acc.backward(loss)
    t.append(time.perf_counter())
    acc.clip_grad_norm_(model.parameters(), max_grad_norm)
    opt.step()  # an fp16 overflow step is skipped on every rank alike (same averaged gradients)
    sched.step()
    opt.zero_grad(set_to_none=True)
    t.append(time.perf_counter())
    if phases is not None:
        phases.update({k: 1000 * (t[i + 1] - t[i]) for i, k in enumerate(PHASES)})
    timing["train_s"] += t[-1] - t[0]
    timing["samples"] += len(idx)
    timing["tokens"] += int(b["attention_mask"].sum())  # this rank's; fit() sums the ranks
    timing["padded_tokens"] += b["input_ids"].numel()
    return loss.item(), parts


def _keep_best(model, pr: Progress, scores: dict, epoch: int, ckpt_dir: Path, write: bool = True) -> None:
    """A better epoch on the selection split becomes pr.best; rank 0 (`write`) saves its weights."""
    from safetensors.torch import save_file

    if pr.best is None or scores["score"] > pr.best["score"]:
        pr.best = {"epoch": epoch + 1, "step": pr.step, **scores}
        if write:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt_dir / BEST))


def _summary(pr: Progress, total: int, resumed_from: int, extra, acc, placement) -> dict:
    """Timing summed over ranks: samples and tokens per second are the whole run's."""
    tm, tt = pr.timing, max(pr.timing["train_s"], 1e-9)
    counts = [tm["samples"], tm["tokens"], tm["padded_tokens"]]
    if acc.num_processes > 1:
        counts = acc.reduce(torch.tensor(counts, dtype=torch.float64, device=acc.device), "sum").tolist()
    samples, tokens, padded = counts
    return {
        "history": pr.history,
        "best": pr.best,
        "steps": total,
        "resumed_from_step": resumed_from,
        "train_time_s": round(tm["train_s"], 2),
        "train_samples_per_s": round(samples / tt, 2),
        "train_tokens_per_s": round(tokens / tt, 1),
        "padding_efficiency": round(tokens / max(padded, 1), 4),
        "extra": extra,
        **placement.record(),
        "world_size": acc.num_processes,
    }


def _global(acc, loss: float, parts: dict) -> dict:
    """The step's loss terms averaged over ranks (every rank calls this at the same steps)."""
    vals = {"loss": loss, **parts}
    if acc.num_processes > 1:
        got = acc.reduce(torch.tensor(list(vals.values()), dtype=torch.float64, device=acc.device), "mean")
        vals = dict(zip(vals, got.tolist()))
    return {f"train/{k}": v for k, v in vals.items()}


@dataclass(frozen=True)
class Run:
    """Where a fit runs: the stage (progress bar, curves, messages), the run's fingerprint (a checkpoint
    resumes only the same run), the Accelerator and the placement pipeline.training.device resolved, and
    the folder dvclive/<stage> goes in (None: no curves)."""

    stage: str
    fp: str
    acc: object
    placement: object
    log_root: Path | None = None


def _always(step: int) -> bool:
    return True


@dataclass(frozen=True)
class Hooks:
    """What a stage adds to plain training. `prepare(model, optimizer, total_steps)` may wrap the optimizer
    (pruning: after Accelerate's prepare, as INC's own example does) and returns the extra-state object;
    `eligible(step)`: whether an epoch ending at that step may be selected; `schedule(total) -> lr_lambda`
    sets the learning rate (None: linear)."""

    prepare: Callable | None = None
    eligible: Callable[[int], bool] = _always
    schedule: Callable | None = None


def fit(
    model,
    train: Tokens,
    dev: Tokens,
    meta: dict,
    p: dict,
    loss_fn,
    run: Run,
    hooks: Hooks = Hooks(),
    select_on: Tokens | None = None,
) -> dict:
    """Train with `loss_fn(model, batch, example_indices) -> (loss, parts)`; returns history, timing and
    the selected epoch.

    The model returned is the last epoch's, or with `select_on` (a split carved from train, never the
    dev set) the epoch that scored best on it among those `hooks.eligible` allows. `dev` is scored each
    epoch for the curves only.
    """
    from safetensors.torch import load_file
    from tqdm.auto import tqdm

    acc, stage = run.acc, run.stage
    ckpt_dir, main = Path(p["checkpoint_dir"]), acc.is_main_process
    per_epoch = math.ceil(len(train) / p["batch_size"])
    total = per_epoch * p["epochs"]
    opt, sched = make_optimizer(model, p, total, hooks.schedule)
    # The LR scheduler stays outside Accelerate, which would step it once per process per step.
    model, opt = acc.prepare(model, opt)
    plain = acc.unwrap_model(model)
    extra = hooks.prepare(plain, opt, total) if hooks.prepare else NoExtra()
    message = f"[{stage}] resuming from step {{}}/{total}"
    state, pr = _resume(ckpt_dir, run.fp, acc, (plain, opt, sched, extra), message)
    resumed_from = pr.step
    log, close_log = None, lambda: None
    if run.log_root and main:
        log, close_log = dvclive_logger(stage, state is not None, run.log_root)

    def checkpoint():
        if main:
            save_checkpoint(
                ckpt_dir,
                {
                    "fingerprint": run.fp,
                    "model": plain.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "extra": extra.state_dict(),
                    "step": pr.step,
                    "rng": torch.get_rng_state(),
                    "history": pr.history,
                    "best": pr.best,
                    "timing": pr.timing,
                },
            )

    bar = tqdm(total=total, initial=pr.step, desc=stage, disable=not (p["progress"] and main), mininterval=2)
    for epoch in range(pr.step // per_epoch, p["epochs"]):
        batches = length_grouped_batches(
            train.lengths, p["batch_size"], p["seed"] + epoch, p["group_by_length"]
        )
        model.train()
        for idx in batches[pr.step - epoch * per_epoch :]:
            mine = shard(idx, acc.process_index, acc.num_processes)
            loss, parts = train_step(
                model, train, mine, loss_fn, opt, sched, p["max_grad_norm"], pr.timing, acc
            )
            pr.step += 1
            pr.timing["epoch_loss"] += loss
            pr.timing["epoch_steps"] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            if run.log_root and pr.step % 10 == 0 and (logged := _global(acc, loss, parts)) and log:
                log(pr.step, logged)
            if pr.step % p["checkpoint_every_steps"] == 0 and pr.step % per_epoch:
                checkpoint()
        _end_epoch(model, dev, select_on, meta, p, pr, epoch, acc, log, hooks.eligible, ckpt_dir)
        checkpoint()
    bar.close()
    close_log()
    acc.wait_for_everyone()  # rank 0's best.safetensors and last checkpoint are complete
    if pr.best is not None:
        plain.load_state_dict(load_file(str(ckpt_dir / BEST)))
    acc.unwrap_model(model, keep_fp32_wrapper=False)  # a plain forward again (fp32) for eval and export
    return _summary(pr, total, resumed_from, extra, acc, run.placement)


def _end_epoch(
    model, dev, select_on, meta, p, pr: Progress, epoch: int, acc, log, eligible, ckpt_dir
) -> None:
    scores = evaluate(model, dev, meta, p["eval_batch_size"], acc)
    chosen = evaluate(model, select_on, meta, p["eval_batch_size"], acc) if select_on is not None else None
    mean = pr.timing["epoch_loss"] / max(pr.timing["epoch_steps"], 1)
    train_loss = _global(acc, mean, {})["train/loss"]  # the epoch's mean step loss over all ranks
    pr.timing.update(epoch_loss=0.0, epoch_steps=0)
    pr.history.append(
        {
            "epoch": epoch + 1,
            "step": pr.step,
            "train_loss": round(train_loss, 6),
            **scores,
            **({"selection": chosen} if chosen else {}),
        }
    )
    if log:
        log(pr.step, {f"eval/{k}": v for k, v in scores.items()})
    if chosen and eligible(pr.step):
        _keep_best(acc.unwrap_model(model), pr, chosen, epoch, ckpt_dir, acc.is_main_process)
