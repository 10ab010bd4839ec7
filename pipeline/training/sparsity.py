"""Measure what pruning left: zeros per Linear weight, over the encoder, over the whole model.

"Remaining weights" is always counted the same way for every method (encoder Linear weights,
against the dense pre-trained encoder when given), so sparse and structural students share one axis.
"""

from __future__ import annotations

import torch


def encoder_linears(model) -> dict[str, torch.nn.Linear]:
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and ".encoder." in f".{name}."
    }


def layer_sparsity(model) -> dict[str, dict]:
    out = {}
    for name, m in encoder_linears(model).items():
        w = m.weight.detach()
        zeros = int((w == 0).sum())
        out[name] = {
            "shape": list(w.shape),
            "zeros": zeros,
            "numel": w.numel(),
            "sparsity": round(zeros / w.numel(), 6),
        }
    return out


def zero_masks(model) -> dict[str, torch.Tensor]:
    """Where each encoder Linear weight is non-zero: what pruning left, as a mask per layer."""
    return {name: m.weight.detach() != 0 for name, m in encoder_linears(model).items()}


def summarize(model, dense_encoder_weights: int | None = None) -> dict:
    """Sparsity figures for metrics files; `dense_encoder_weights` counts slimmed-away weights as removed."""
    layers = layer_sparsity(model)
    enc_numel = sum(v["numel"] for v in layers.values())
    enc_nonzero = enc_numel - sum(v["zeros"] for v in layers.values())
    params = [p.detach() for p in model.parameters()]
    total = sum(p.numel() for p in params)
    nonzero = sum(int((p != 0).sum()) for p in params)
    reference = dense_encoder_weights or enc_numel
    return {
        "encoder_linear_sparsity": round(1 - enc_nonzero / enc_numel, 6),
        "encoder_remaining_weights": round(enc_nonzero / reference, 6),
        "encoder_linear_params": enc_numel,
        "encoder_linear_nonzero": enc_nonzero,
        "model_params": total,
        "model_nonzero": nonzero,
        "model_sparsity": round(1 - nonzero / total, 6),
        "layers": layers,
    }


def pattern_misfits(model, pattern: str) -> list[str]:
    """Encoder Linear layers whose shape a block pattern does not divide. INC skips such layers with
    only a warning, so the stage checks first and names them."""
    if "x" in pattern and pattern != "channelx1":
        rows, cols = map(int, pattern.split("x"))  # INC's NxM: N output rows by M input columns
    elif ":" in pattern:
        rows, cols = 1, int(pattern.split(":")[1])
    else:
        return []
    return [
        f"{name} {tuple(m.weight.shape)}"
        for name, m in encoder_linears(model).items()
        if m.weight.shape[0] % rows or m.weight.shape[1] % cols
    ]


@torch.no_grad()
def enforce_n_m(model, n: int, m: int) -> int:
    """Make every group of m consecutive inputs hold at least n zeros (INC's N:M pattern leaves about
    one group per matrix short, which a strict 2:4 kernel such as TensorRT's would reject).
    Zeros the smallest-magnitude weights of the short groups; returns how many groups changed."""
    fixed = 0
    for lin in encoder_linears(model).values():
        w = lin.weight
        if w.shape[1] % m:
            continue
        groups = w.view(w.shape[0], -1, m)
        short = (groups == 0).sum(-1) < n
        if short.any():
            g = groups[short]
            smallest = g.abs().argsort(-1)[:, :n]
            g.scatter_(-1, smallest, 0.0)
            groups[short] = g
            fixed += int(short.sum())
    return fixed
