"""The prune-at-distill loss: alpha * task loss + beta * T^2 * KL(teacher || student) + gamma * hidden MSE.

Pure functions on tensors; the layer map lets a student with fewer layers learn from chosen
teacher layers (hidden_states[0] is the embedding output, so index i is the output of layer i).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def layer_map(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """Student hidden-state index -> teacher index, spread evenly (TinyBERT's uniform mapping).

    Embeddings map to embeddings, the last layer to the last layer.
    """
    if student_layers > teacher_layers:
        raise ValueError(f"student has {student_layers} layers, more than the teacher's {teacher_layers}")
    return [(i, round(i * teacher_layers / student_layers)) for i in range(student_layers + 1)]


def kd_loss(student_logits, teacher_logits, temperature: float, regression: bool) -> torch.Tensor:
    if regression:  # no distribution to match: regress onto the teacher's score
        return F.mse_loss(student_logits, teacher_logits)
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, -1), F.softmax(teacher_logits / t, -1),
                    reduction="batchmean") * t * t


def hidden_loss(student_hidden, teacher_hidden, mapping, attention_mask) -> torch.Tensor:
    """MSE between mapped hidden states over real (unpadded) tokens only."""
    mask = attention_mask.unsqueeze(-1).to(student_hidden[0].dtype)
    denom = mask.sum() * student_hidden[0].shape[-1]
    total = sum(((student_hidden[s] - teacher_hidden[t]) ** 2 * mask).sum() / denom for s, t in mapping)
    return total / len(mapping)


def distill_loss(student_out, teacher_out, labels, attention_mask, *, alpha: float, beta: float, gamma: float,
                 temperature: float, mapping, regression: bool) -> tuple[torch.Tensor, dict]:
    parts = {}
    if alpha:
        parts["ce"] = (F.mse_loss(student_out.logits.squeeze(-1), labels.float()) if regression
                       else F.cross_entropy(student_out.logits, labels))
    if beta:
        parts["kd"] = kd_loss(student_out.logits, teacher_out.logits, temperature, regression)
    if gamma:
        parts["hidden"] = hidden_loss(student_out.hidden_states, teacher_out.hidden_states, mapping, attention_mask)
    weights = {"ce": alpha, "kd": beta, "hidden": gamma}
    loss = sum(weights[k] * v for k, v in parts.items())
    return loss, {k: round(v.item(), 5) for k, v in parts.items()}
