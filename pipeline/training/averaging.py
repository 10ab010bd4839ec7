"""Tail averaging (`prune.average_tail`): the student that ships is the mean of its weights over the
fixed-sparsity tail, not the last step's.

At 95% on MRPC the dev accuracy of the tail's epochs (11-16 of 16) spans 76.0 to 80.9 with no trend
(profiles/mrpc/seeds/95-s*), so the last step is one draw from a wide spread. Averaging the weights
visited along the tail (stochastic weight averaging, Izmailov et al. 2018) trades that draw for their
centre. Only tail steps are averaged: the masks no longer move there,
and INC applies them before this hook runs, so a pruned weight is zero at every averaged step and the
average keeps the sparsity. The average is a running mean in fp32 and travels in checkpoints.
"""
from __future__ import annotations

import torch


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
            raise RuntimeError(f"prune.average_tail: no step after the last mask update (step {self.after_step}) "
                               f"to average in {self.step} steps; lower prune.end or add epochs")
        for n, q in self.params.items():
            q.copy_(self.mean[n].to(q.dtype))
        return self.count

    def state_dict(self) -> dict:
        return {"inner": self.inner.state_dict(), "step": self.step, "count": self.count,
                "mean": dict(self.mean)}  # saved at once by the checkpoint: no copy needed

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state["inner"])
        self.step, self.count = state["step"], state["count"]
        self.mean = {n: t.to(self.params[n].device) for n, t in state["mean"].items()}
