"""The student of prune-at-distill: how it is built (pre-trained or teacher init, dropped layers),
the loss it learns from the teacher, and what is done and checked once training ends (N:M made
strict, structured students slimmed, the sparsity target verified)."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from pipeline.core.models import load_classifier, load_trained, resolve_model
from pipeline.training import inc, sparsity
from pipeline.training.distill import distill_loss


class PruneError(RuntimeError):
    pass


def drop_layers(model, keep: list[int]) -> None:
    """Keep only the listed encoder layers (a layer-dropped student, e.g. every other layer)."""
    base = getattr(model, model.base_model_prefix)
    n = len(base.encoder.layer)
    if keep[-1] >= n:
        raise PruneError(f"prune.student_layers = {keep} names layer {keep[-1]}, the model has {n} (0..{n - 1})")
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
    return (f"; heads kept per layer {heads} of {n}: INC rounds the pruned head count down, so for {k} of {n} "
            f"heads pruned set a target a hair above {k}/{n}, e.g. {k / n + 1e-4:.4f}")


def check_target(achieved: float, target: float, tolerance: float, hint: str = "") -> None:
    if abs(achieved - target) > tolerance:
        raise PruneError(f"pruning missed prune.target_sparsity = {target}: reached {achieved:.4f} "
                         f"(tolerance {tolerance:.4f}); lengthen training or move prune.end earlier{hint}")


def finalize(student, p: dict, teacher_config, dense_ref: int) -> dict:
    """After training: make N:M strict, slim structured students, measure, and check the target."""

    structured = p["pattern"] == "channelx1" and p["target_sparsity"] > 0
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
    if p["target_sparsity"] > 0:
        check_target(achieved, p["target_sparsity"], tol, structured_hint(student, p["target_sparsity"])
                     if structured else "")
    return {"after": after, "achieved": achieved, "tolerance": tol, "structured": structured,
            "nm_groups_fixed": nm_fixed}


def make_loss(teacher, p: dict, regression: bool, mapping, cache=None):
    """loss_fn(student, batch, idx); the teacher's outputs come from `cache` (a TeacherCache) when given."""
    want_hidden = p["gamma_hidden"] > 0

    def loss_fn(student, batch, idx):
        labels = batch.pop("labels")
        if cache is not None:
            t_out = cache.outputs(idx, batch["input_ids"].shape[1])
        else:
            with torch.no_grad():
                t_out = teacher(**batch, output_hidden_states=want_hidden)
        s_out = student(**batch, output_hidden_states=want_hidden)
        return distill_loss(s_out, t_out, labels, batch["attention_mask"], alpha=p["alpha_ce"], beta=p["beta_kd"],
                            gamma=p["gamma_hidden"], temperature=p["temperature"], mapping=mapping,
                            regression=regression)

    return loss_fn


def build_student(p: dict, meta: dict, teacher_dir: Path):
    if p["init"] == "teacher":
        student = load_trained(teacher_dir)
    else:
        student = load_classifier(resolve_model(meta["model"]), meta["num_labels"], meta["problem_type"],
                                  meta["labels"])
    if p["student_layers"]:
        drop_layers(student, p["student_layers"])
    return student




def check_pattern(student, p: dict) -> None:
    misfits = sparsity.pattern_misfits(student, p["pattern"]) if p["target_sparsity"] > 0 else []
    if misfits:
        raise PruneError(f"prune.pattern = {p['pattern']!r} does not divide these layers' weights: "
                         f"{', '.join(misfits[:4])}{' ...' if len(misfits) > 4 else ''}; pick block sizes that do")


def sparsity_metrics(student, fin: dict, dense: dict) -> dict:
    """What metrics/prune.json says about the pruned weights (the per-layer detail goes to sparsity.json)."""
    after = fin["after"]
    return {"achieved_sparsity": round(fin["achieved"], 6), "tolerance": fin["tolerance"], "slimmed": fin["structured"],
            "nm_groups_fixed": fin["nm_groups_fixed"], **{k: v for k, v in after.items() if k != "layers"},
            "model_remaining_weights": round(after["model_nonzero"] / dense["model_params"], 6),
            "layer_sparsity_min": min(v["sparsity"] for v in after["layers"].values()),
            "layer_sparsity_max": max(v["sparsity"] for v in after["layers"].values()),
            "layer_shapes": [{"heads": l.attention.self.num_attention_heads, "ffn": l.intermediate.dense.out_features}
                             for l in getattr(student, student.base_model_prefix).encoder.layer]}
