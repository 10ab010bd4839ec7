"""The prune-at-distill loss, term by term, as pure functions on tensors:

    loss = ce * task loss + kd * T^2 * KL(teacher || student) + hidden * MSE(mapped hidden states)
         + attention * MSE(mapped pre-softmax attention scores) + last_hidden * MSE(last hidden state)

The layer map lets a student with fewer layers learn from chosen teacher layers (hidden_states[0] is
the embedding output, so index i is the output of layer i; the attention term pairs layer i-1 with
the teacher's t-1 for every (i, t) with i >= 1). Padded positions never count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

TERMS = ("ce", "kd", "hidden", "attention", "last_hidden")


def layer_map(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """Student hidden-state index -> teacher index, spread evenly (TinyBERT's uniform mapping).

    Embeddings map to embeddings, the last layer to the last layer.
    """
    if student_layers > teacher_layers:
        raise ValueError(f"student has {student_layers} layers, more than the teacher's {teacher_layers}")
    return [(i, round(i * teacher_layers / student_layers)) for i in range(student_layers + 1)]


def attention_pairs(mapping) -> list[tuple[int, int]]:
    """Transformer-layer pairs (student, teacher) of the attention term, from the hidden-state map."""
    return [(s - 1, t - 1) for s, t in mapping if s >= 1]


def kd_loss(student_logits, teacher_logits, temperature: float, regression: bool) -> torch.Tensor:
    student_logits, teacher_logits = student_logits.float(), teacher_logits.float()  # under bf16 autocast too
    if regression:  # no distribution to match: regress onto the teacher's score
        return F.mse_loss(student_logits, teacher_logits)
    t = temperature
    return (
        F.kl_div(
            F.log_softmax(student_logits / t, -1), F.softmax(teacher_logits / t, -1), reduction="batchmean"
        )
        * t
        * t
    )


def hidden_loss(student_hidden, teacher_hidden, mapping, attention_mask) -> torch.Tensor:
    """MSE between mapped hidden states over real (unpadded) tokens only."""
    mask = attention_mask.unsqueeze(-1).float()
    denom = mask.sum() * student_hidden[0].shape[-1]
    total = sum(
        ((student_hidden[s].float() - teacher_hidden[t].float()) ** 2 * mask).sum() / denom
        for s, t in mapping
    )
    return total / len(mapping)


def attention_scores(q: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """Pre-softmax scores QK^T / sqrt(d) per head, [B, heads, L, L], from the query and key
    projections [B, L, hidden] (TinyBERT and SparseBERT distil these, not the probabilities)."""
    b, n, h = q.shape
    d = h // heads
    q, k = q.view(b, n, heads, d).transpose(1, 2), k.view(b, n, heads, d).transpose(1, 2)
    return q @ k.transpose(-1, -2) / math.sqrt(d)


def attention_loss(student_qk, teacher_qk, pairs, attention_mask, heads: int) -> torch.Tensor:
    """MSE of pre-softmax attention scores over (query, key) pairs of real tokens only, averaged over
    the mapped layers; `*_qk[layer] = (q, k)`."""
    m = attention_mask.to(torch.bool)
    valid = (m[:, None, :, None] & m[:, None, None, :]).expand(-1, heads, -1, -1)
    total = 0.0
    for s, t in pairs:
        diff = (
            attention_scores(*student_qk[s], heads).float() - attention_scores(*teacher_qk[t], heads).float()
        )
        total = total + (diff**2)[valid].mean()
    return total / len(pairs)


@dataclass(frozen=True)
class LossSpec:
    """What the loss is, fixed for a run: each term's weight (a term weighted 0 is not computed), the KD
    temperature, the layer map, whether the task is a regression, and the teacher's heads (attention)."""

    weights: dict
    temperature: float
    mapping: list
    regression: bool
    heads: int = 0


def distill_loss(
    student_out, teacher_out, labels, attention_mask, spec: LossSpec, qk: tuple = (None, None)
) -> tuple[torch.Tensor, dict]:
    """Weighted sum of the terms whose weight is non-zero; returns (loss, each term's value). `qk`: the
    student's and the teacher's captured query/key projections, for the attention term."""
    weights, mapping, parts = spec.weights, spec.mapping, {}
    if weights.get("ce"):
        logits = student_out.logits.float()
        parts["ce"] = (
            F.mse_loss(logits.squeeze(-1), labels.float())
            if spec.regression
            else F.cross_entropy(logits, labels)
        )
    if weights.get("kd"):
        parts["kd"] = kd_loss(student_out.logits, teacher_out.logits, spec.temperature, spec.regression)
    if weights.get("hidden"):
        parts["hidden"] = hidden_loss(
            student_out.hidden_states, teacher_out.hidden_states, mapping, attention_mask
        )
    if weights.get("last_hidden"):
        last = [(mapping[-1][0], mapping[-1][1])]
        parts["last_hidden"] = hidden_loss(
            student_out.hidden_states, teacher_out.hidden_states, last, attention_mask
        )
    if weights.get("attention"):
        parts["attention"] = attention_loss(*qk, attention_pairs(mapping), attention_mask, spec.heads)
    loss = sum(weights[k] * v for k, v in parts.items())
    return loss, {k: round(v.item(), 5) for k, v in parts.items()}
