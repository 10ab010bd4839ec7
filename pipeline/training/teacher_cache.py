"""The teacher's outputs, computed once per training example and reused every epoch.

The teacher is frozen and in eval mode (no dropout), so its logits, hidden states and attention
projections for an example are the same every epoch; a prune step spent ~20% of its time
recomputing them. Per-token tensors are kept for real tokens only (padding is masked out of every
loss term), as one flat [tokens, hidden] tensor per teacher layer the loss maps to, and padded back
to each batch's width on the way out.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import torch

from pipeline.core.tokens import Tokens
from pipeline.training.student import capture_qk

BYTES = 4  # float32: the cached loss equals the live one up to float rounding


def size_mb(ds: Tokens, layers: list[int], hidden: int, num_labels: int, att_layers: list[int] = ()) -> float:
    """What the cache takes in memory: per token a hidden vector per cached layer, and a query and a
    key vector per attention layer."""
    per_token = (len(layers) + 2 * len(att_layers)) * hidden
    return (int(ds.lengths.sum()) * per_token + len(ds) * num_labels) * BYTES / 1e6


def _pad(flat: torch.Tensor, offsets, idx, width: int) -> torch.Tensor:
    out = torch.zeros(len(idx), width, flat.shape[1])
    for row, j in enumerate(idx):
        a, e = offsets[j], offsets[j + 1]
        out[row, : e - a] = flat[a:e]
    return out


class TeacherCache:
    """Logits [N, C]; per cached teacher layer, real-token hidden states [tokens, H]; per attention
    layer, real-token query and key projections [tokens, H] (scores are rebuilt from them per batch)."""

    def __init__(self, logits: torch.Tensor, hidden: dict, qk: dict, offsets: np.ndarray):
        self.logits, self.hidden, self.qk, self.offsets = logits, hidden, qk, offsets

    @classmethod
    @torch.no_grad()
    def build(
        cls, teacher, ds: Tokens, layers: list[int], batch_size: int = 64, att_layers: list[int] = ()
    ) -> "TeacherCache":
        teacher.eval()
        h, n_tok = teacher.config.hidden_size, int(ds.lengths.sum())
        logits = torch.empty(len(ds), teacher.config.num_labels)
        hidden = {t: torch.empty(n_tok, h) for t in layers}
        qk = {t: (torch.empty(n_tok, h), torch.empty(n_tok, h)) for t in att_layers}
        order = np.argsort(-ds.lengths, kind="stable")  # similar lengths together: little padding
        dev = next(teacher.parameters()).device
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            b = ds.batch(idx)
            b.pop("labels")
            with capture_qk(teacher, list(att_layers)) as got:
                out = teacher(**{k: v.to(dev) for k, v in b.items()}, output_hidden_states=bool(layers))
            logits[idx] = out.logits.float().cpu()
            for row, j in enumerate(idx):
                a, e = ds.offsets[j], ds.offsets[j + 1]
                for t in layers:
                    hidden[t][a:e] = out.hidden_states[t][row, : e - a]
                for t in att_layers:
                    qk[t][0][a:e], qk[t][1][a:e] = got[t][0][row, : e - a], got[t][1][row, : e - a]
        return cls(logits, hidden, qk, ds.offsets)

    def outputs(self, idx, width: int, device="cpu") -> SimpleNamespace:
        """What a live teacher forward gives for these examples, padded to `width` (zeros at padded
        positions): `.logits`, `.hidden_states[t]` per cached layer and `.qk[t] = (q, k)` per attention
        layer, on `device` (the cache itself stays in host memory)."""
        pad = lambda flat: _pad(flat, self.offsets, idx, width).to(device)  # noqa: E731
        hs = {t: pad(flat) for t, flat in self.hidden.items()}
        qk = {t: (pad(q), pad(k)) for t, (q, k) in self.qk.items()}
        return SimpleNamespace(
            logits=self.logits[torch.as_tensor(np.asarray(idx))].to(device), hidden_states=hs, qk=qk
        )


def maybe_build(
    teacher, ds: Tokens, layers: list[int], limit_mb: float, att_layers: list[int] = ()
) -> tuple[TeacherCache | None, dict]:
    """The cache when it fits in `limit_mb` (prune.teacher_cache_mb; 0 = off), and what was decided, for
    metrics/prune.json: a run without the cache says why."""
    mb = round(size_mb(ds, layers, teacher.config.hidden_size, teacher.config.num_labels, att_layers), 1)
    if mb > limit_mb:
        why = (
            "off (prune.teacher_cache_mb = 0)"
            if limit_mb == 0
            else f"{mb} MB would exceed prune.teacher_cache_mb = {limit_mb}"
        )
        print(f"[prune] teacher cache not used: {why}; the teacher runs at every step")
        return None, {"used": False, "size_mb": mb, "why": why}
    t0 = time.perf_counter()
    cache = TeacherCache.build(teacher, ds, layers, att_layers=att_layers)
    return cache, {"used": True, "size_mb": mb, "build_s": round(time.perf_counter() - t0, 2)}
