"""When a student is pruned and how fast it learns meanwhile: the three phases of prune-at-distill
(dense warm-up, ramp, fixed-sparsity tail, each a fraction of training), the mask-update steps,
and the learning-rate schedules that go with them. Pure functions of step counts.

A recipe says "40 mask updates over the ramp", not "one every 10 steps", so it reads the same on
MRPC's 115 steps an epoch as on SST-2's 2,000.
"""

from __future__ import annotations

from pipeline.core.registry import LR_SCHEDULES  # declared with the other registries

REWIND_FLOOR = 0.1  # oBERT's cycles run 5e-5 -> 5e-6: each ends at a tenth of where it started


def step_range(p: dict, total_steps: int) -> tuple[int, int, int]:
    """(start_step, end_step, frequency): INC's inclusive pruning window and the steps between mask
    updates, `prune.mask_updates` of them over the ramp; the end is aligned to the frequency so the last
    update lands on end_step and reaches the full target."""
    start = min(int(p["start"] * total_steps), total_steps - 1)
    end = max(start, int(p["end"] * total_steps) - 1)
    n = min(p["mask_updates"], end - start)  # updates after the first one, at step `start`
    freq = max(1, (end - start) // max(1, n))
    return start, start + n * freq, freq


def update_steps(p: dict, total_steps: int) -> list[int]:
    """The steps at which INC recomputes the masks."""
    start, end, freq = step_range(p, total_steps)
    return list(range(start, end + 1, freq))


def lr_factor(
    step: int, kind: str, total: int, warmup: int, updates: list[int] | None = None, end: int | None = None
) -> float:
    """Multiplier of the base learning rate at `step` (LambdaLR's lr_lambda).

    linear: warm-up, then linear decay to 0 over all of training.
    constant_then_decay: warm-up, constant through the ramp (the masks still move), linear decay to 0
        over the fixed-sparsity tail after `end`.
    rewind (oBERT): warm-up, then at every mask update the rate goes back to its start and decays to
        REWIND_FLOOR of it by the next update; the tail decays from the start to 0.
    """
    if kind not in LR_SCHEDULES:
        raise ValueError(f"unknown lr schedule {kind!r}; allowed: {', '.join(LR_SCHEDULES)}")
    if step < warmup:
        return step / max(1, warmup)  # as transformers.get_linear_schedule_with_warmup
    if kind == "linear":
        return max(0.0, (total - step) / max(1, total - warmup))
    tail_from = max(warmup, end if end is not None else total)
    if step >= tail_from:
        return max(0.0, (total - step) / max(1, total - tail_from))
    if kind == "constant_then_decay" or not updates:
        return 1.0
    past = [u for u in updates if u <= step]
    if not past:
        return 1.0
    nxt = next((u for u in updates if u > step), tail_from)
    a = max(past[-1], warmup)  # a cycle that began during warm-up starts at the end of it
    return 1.0 - (1.0 - REWIND_FLOOR) * (step - a) / max(1, nxt - a)


def lr_lambda(p: dict, total: int, pruning: bool):
    """The schedule a stage's params ask for. The teacher (no pruning) always decays linearly."""
    warmup = int(p["warmup_ratio"] * total)
    kind = p["lr_schedule"] if pruning else "linear"
    updates = update_steps(p, total) if pruning else None
    end = step_range(p, total)[1] + 1 if pruning else None
    return lambda step: lr_factor(step, kind, total, warmup, updates, end)
