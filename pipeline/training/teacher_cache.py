"""The teacher's outputs, computed once per training example and reused every epoch.

The teacher is frozen and in eval mode (no dropout), so its logits and hidden states for an example
are the same every epoch; a prune step spent ~20% of its time recomputing them. Hidden states are
kept for real tokens only (padding is masked out of the loss anyway), as one flat [tokens, hidden]
tensor per teacher layer the loss maps to, and padded back to each batch's width on the way out.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import torch

from pipeline.core.tokens import Tokens

BYTES = 4  # float32: the cached loss equals the live one up to float rounding


def size_mb(ds: Tokens, layers: list[int], hidden: int, num_labels: int) -> float:
    """What the cache takes in memory."""
    return (int(ds.lengths.sum()) * len(layers) * hidden + len(ds) * num_labels) * BYTES / 1e6


class TeacherCache:
    """Logits [N, C] and, per cached teacher layer, real-token hidden states [tokens, H]."""

    def __init__(self, logits: torch.Tensor, hidden: dict[int, torch.Tensor], offsets: np.ndarray):
        self.logits, self.hidden, self.offsets = logits, hidden, offsets

    @classmethod
    @torch.no_grad()
    def build(cls, teacher, ds: Tokens, layers: list[int], batch_size: int = 64) -> "TeacherCache":
        teacher.eval()
        h = teacher.config.hidden_size
        logits = torch.empty(len(ds), teacher.config.num_labels)
        hidden = {t: torch.empty(int(ds.lengths.sum()), h) for t in layers}
        order = np.argsort(-ds.lengths, kind="stable")  # similar lengths together: little padding
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            b = ds.batch(idx)
            b.pop("labels")
            out = teacher(**b, output_hidden_states=bool(layers))
            logits[idx] = out.logits.float()
            for row, j in enumerate(idx):
                a, e = ds.offsets[j], ds.offsets[j + 1]
                for t in layers:
                    hidden[t][a:e] = out.hidden_states[t][row, : e - a]
        return cls(logits, hidden, ds.offsets)

    def outputs(self, idx, width: int) -> SimpleNamespace:
        """What `teacher(**batch, output_hidden_states=True)` gives for these examples, padded to `width`:
        `.logits` and `.hidden_states[t]` for each cached layer t (zeros at padded positions)."""
        hs = {}
        for t, flat in self.hidden.items():
            out = torch.zeros(len(idx), width, flat.shape[1])
            for row, j in enumerate(idx):
                a, e = self.offsets[j], self.offsets[j + 1]
                out[row, : e - a] = flat[a:e]
            hs[t] = out
        return SimpleNamespace(logits=self.logits[torch.as_tensor(np.asarray(idx))], hidden_states=hs)


def maybe_build(teacher, ds: Tokens, layers: list[int], limit_mb: float) -> tuple[TeacherCache | None, dict]:
    """The cache when it fits in `limit_mb` (prune.teacher_cache_mb; 0 = off), and what was decided, for
    metrics/prune.json: a run without the cache says why."""
    mb = round(size_mb(ds, layers, teacher.config.hidden_size, teacher.config.num_labels), 1)
    if mb > limit_mb:
        why = "off (prune.teacher_cache_mb = 0)" if limit_mb == 0 else \
            f"{mb} MB would exceed prune.teacher_cache_mb = {limit_mb}"
        print(f"[prune] teacher cache not used: {why}; the teacher runs at every step")
        return None, {"used": False, "size_mb": mb, "why": why}
    t0 = time.perf_counter()
    cache = TeacherCache.build(teacher, ds, layers)
    return cache, {"used": True, "size_mb": mb, "build_s": round(time.perf_counter() - t0, 2)}
