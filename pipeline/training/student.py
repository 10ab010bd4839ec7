"""The student of prune-at-distill: how it is built (pre-trained or teacher init, dropped layers),
the loss it learns from the teacher, and what is done and checked once training ends (N:M made
strict, structured students slimmed, the sparsity target verified)."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch

from pipeline.core.models import load_classifier, load_trained, start_model
from pipeline.training import inc, sparsity
from pipeline.training.distill import LossSpec, attention_pairs, distill_loss


class PruneError(RuntimeError):
    pass


def drop_layers(model, keep: list[int]) -> None:
    """Keep only the listed encoder layers (a layer-dropped student, e.g. every other layer)."""
    base = getattr(model, model.base_model_prefix)
    n = len(base.encoder.layer)
    if keep[-1] >= n:
        raise PruneError(
            f"prune.student_layers = {keep} names layer {keep[-1]}, the model has {n} (0..{n - 1})"
        )
    base.encoder.layer = torch.nn.ModuleList([base.encoder.layer[i] for i in keep])
    model.config.num_hidden_layers = len(keep)


def structured_tolerance(config, round_multiplier: int = 32) -> float:
    """How far a slimmed student can land from its target: half a head (heads go whole) plus one block of
    FFN channels (slimming rounds the kept channels up to a multiple of `round_multiplier`)."""
    h, heads, ffn = config.hidden_size, config.num_attention_heads, config.intermediate_size
    layer = 4 * h * h + 2 * h * ffn
    return (4 * h * (h // heads) / 2 + 2 * h * round_multiplier) / layer


def structured_hint(student, target: float) -> str:
    """INC rounds the number of pruned heads down from a schedule that ends at the target up to float
    error, so 0.5 x 12 heads prunes 5 and 0.8333 x 12 prunes 9: a target a hair above k/n prunes k."""
    heads = [layer.attention.self.num_attention_heads for layer in student.base_model.encoder.layer]
    n = student.config.num_attention_heads
    k = round(target * n) if abs(target * n - round(target * n)) < 0.01 else math.ceil(target * n)
    return (
        f"; heads kept per layer {heads} of {n}: INC rounds the pruned head count down, so for {k} of {n} "
        f"heads pruned set a target a hair above {k}/{n}, e.g. {k / n + 1e-4:.4f}"
    )


def check_target(achieved: float, target: float, tolerance: float, hint: str = "") -> None:
    if abs(achieved - target) > tolerance:
        raise PruneError(
            f"pruning missed prune.target_sparsity = {target}: reached {achieved:.4f} "
            f"(tolerance {tolerance:.4f}); lengthen training or move prune.end earlier{hint}"
        )


def finalize(student, p: dict, teacher_config, dense_ref: int, planned: dict | None = None) -> dict:
    """After training: make N:M strict, slim structured students, measure, and check the target (a planned
    structure is checked by the caller, against its speed target)."""

    structured = bool(planned and (planned["mha_sparsity"] or planned["ffn_sparsity"])) or (
        p["pattern"] == "channelx1" and p["target_sparsity"] > 0
    )
    nm_fixed = sparsity.enforce_n_m(student, *map(int, p["pattern"].split(":"))) if ":" in p["pattern"] else 0
    before = sparsity.summarize(student, dense_ref)
    if structured:
        inc.slim(student)
    after = sparsity.summarize(student, dense_ref)
    if structured and after["encoder_linear_params"] >= before["encoder_linear_params"]:
        raise PruneError("model_slim removed nothing: the structured masks were not applied")
    # Slimmed weights are gone rather than zero, so structured students count removed weights.
    achieved = 1 - after["encoder_remaining_weights"] if structured else after["encoder_linear_sparsity"]
    tol = max(p["tolerance"], structured_tolerance(teacher_config)) if structured else p["tolerance"]
    if p["target_sparsity"] > 0 and not planned:
        check_target(
            achieved,
            p["target_sparsity"],
            tol,
            structured_hint(student, p["target_sparsity"]) if structured else "",
        )
    return {
        "after": after,
        "achieved": achieved,
        "tolerance": tol,
        "structured": structured,
        "nm_groups_fixed": nm_fixed,
    }


def loss_weights(p: dict) -> dict:
    """prune.* loss weights by term (pipeline.training.distill.TERMS)."""
    return {
        "ce": p["alpha_ce"],
        "kd": p["beta_kd"],
        "hidden": p["gamma_hidden"],
        "attention": p["attention_mse"],
        "last_hidden": p["last_hidden_mse"],
    }


def teacher_layers(p: dict, mapping) -> tuple[list[int], list[int]]:
    """(teacher hidden-state indices, teacher transformer layers for attention) the loss needs."""
    w = loss_weights(p)
    hidden = sorted({t for _, t in mapping}) if w["hidden"] else []
    if w["last_hidden"]:
        hidden = sorted(set(hidden) | {mapping[-1][1]})
    attention = sorted({t for _, t in attention_pairs(mapping)}) if w["attention"] else []
    return hidden, attention


@contextlib.contextmanager
def capture_qk(model, layers: list[int]):
    """Within the block, {layer: [q, k]}: the query and key projections of those encoder layers at
    every forward (the attention term is built from them)."""
    out, handles = {}, []
    model = getattr(model, "module", model)  # the model inside a DDP wrapper
    enc = getattr(model, model.base_model_prefix).encoder.layer
    for i in layers:
        att = enc[i].attention.self
        for slot, lin in enumerate((att.query, att.key)):
            handles.append(
                lin.register_forward_hook(
                    lambda mod, args, o, i=i, slot=slot: out.setdefault(i, [None, None]).__setitem__(slot, o)
                )
            )
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


def make_loss(teacher, p: dict, regression: bool, mapping, cache=None):
    """loss_fn(student, batch, idx); the teacher's outputs come from `cache` (a TeacherCache) when given."""
    w = loss_weights(p)
    t_hidden, t_att = teacher_layers(p, mapping)
    s_att = sorted({s for s, _ in attention_pairs(mapping)}) if w["attention"] else []
    spec = LossSpec(w, p["temperature"], mapping, regression, teacher.config.num_attention_heads)

    def loss_fn(student, batch, idx):
        labels = batch.pop("labels")
        if cache is not None:
            t_out = cache.outputs(idx, batch["input_ids"].shape[1], batch["input_ids"].device)
            t_qk = t_out.qk
        else:
            with torch.no_grad(), capture_qk(teacher, t_att) as t_qk:
                t_out = teacher(**batch, output_hidden_states=bool(t_hidden))
        with capture_qk(student, s_att) as s_qk:
            s_out = student(**batch, output_hidden_states=bool(w["hidden"] or w["last_hidden"]))
        return distill_loss(s_out, t_out, labels, batch["attention_mask"], spec, (s_qk, t_qk))

    return loss_fn


def reuse_head(student, teacher) -> list[str]:
    """INC's recipe: the student gets the teacher's pooler and classifier, frozen, so matching the
    teacher's last hidden state is enough to match its predictions. Returns the parameter names frozen."""
    frozen = []
    for name in ("pooler", "classifier"):
        s_mod = getattr(getattr(student, student.base_model_prefix), name, None) or getattr(
            student, name, None
        )
        t_mod = getattr(getattr(teacher, teacher.base_model_prefix), name, None) or getattr(
            teacher, name, None
        )
        if s_mod is None or t_mod is None:
            continue
        s_mod.load_state_dict(t_mod.state_dict())
        for n, param in s_mod.named_parameters():
            param.requires_grad_(False)
            frozen.append(f"{name}.{n}")
    return frozen


def build_student(p: dict, meta: dict, teacher_dir: Path, teacher=None, keep: list[int] | None = None):
    """The student before training; `keep` (a planned structure's layers) overrides prune.student_layers."""
    if p["init"] == "teacher":
        student = load_trained(teacher_dir)
    else:
        student = load_classifier(start_model(meta), meta["num_labels"], meta["problem_type"], meta["labels"])
    if keep or p["student_layers"]:
        drop_layers(student, keep or p["student_layers"])
    if p["reuse_teacher_head"]:
        reuse_head(student, teacher)
    return student


def check_pattern(student, p: dict) -> None:
    misfits = sparsity.pattern_misfits(student, p["pattern"]) if p["target_sparsity"] > 0 else []
    if misfits:
        raise PruneError(
            f"prune.pattern = {p['pattern']!r} does not divide these layers' weights: "
            f"{', '.join(misfits[:4])}{' ...' if len(misfits) > 4 else ''}; pick block sizes that do"
        )


def sparsity_metrics(student, fin: dict, dense: dict) -> dict:
    """What metrics/prune.json says about the pruned weights (the per-layer detail goes to sparsity.json)."""
    after = fin["after"]
    return {
        "achieved_sparsity": round(fin["achieved"], 6),
        "tolerance": fin["tolerance"],
        "slimmed": fin["structured"],
        "nm_groups_fixed": fin["nm_groups_fixed"],
        **{k: v for k, v in after.items() if k != "layers"},
        "model_remaining_weights": round(after["model_nonzero"] / dense["model_params"], 6),
        "layer_sparsity_min": min(v["sparsity"] for v in after["layers"].values()),
        "layer_sparsity_max": max(v["sparsity"] for v in after["layers"].values()),
        "layer_shapes": [
            {"heads": l.attention.self.num_attention_heads, "ffn": l.intermediate.dense.out_features}
            for l in getattr(student, student.base_model_prefix).encoder.layer
        ],
    }
