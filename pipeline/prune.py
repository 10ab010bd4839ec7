"""Stage `prune`: prune at distilling (SparseBERT's knowledge-aware sparse pruning).

    python -m pipeline.prune           # reads the `prune` section of params.yaml

The student starts from the pre-trained checkpoint (or the teacher) and is sparsified on INC's
schedule while it learns from the fine-tuned teacher's logits and hidden states, so it keeps
both the pre-trained and the task knowledge. Structured students (`channelx1`) are slimmed.
Output (prune.out_dir): the student (safetensors + tokenizer; slimmed ones reload through
pipeline.models.load_trained) and metrics/prune.json.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

from pipeline.common import Timer, atomic_dir, seed_everything, set_threads, write_json, write_metrics
from pipeline.params import load_section, metrics_dir, upstream_dir
from pipeline.teacher import dvclive_logger, load_inputs


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
    from pipeline import inc, sparsity

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


def make_loss(teacher, p: dict, regression: bool, mapping):
    from pipeline.distill import distill_loss

    want_hidden = p["gamma_hidden"] > 0

    def loss_fn(student, batch):
        labels = batch.pop("labels")
        with torch.no_grad():
            t_out = teacher(**batch, output_hidden_states=want_hidden)
        s_out = student(**batch, output_hidden_states=want_hidden)
        return distill_loss(s_out, t_out, labels, batch["attention_mask"], alpha=p["alpha_ce"], beta=p["beta_kd"],
                            gamma=p["gamma_hidden"], temperature=p["temperature"], mapping=mapping,
                            regression=regression)

    return loss_fn


def build_student(p: dict, meta: dict, teacher_dir: Path):
    from pipeline.models import load_classifier, load_trained, resolve_model

    if p["init"] == "teacher":
        student = load_trained(teacher_dir)
    else:
        student = load_classifier(resolve_model(meta["model"]), meta["num_labels"], meta["problem_type"],
                                  meta["labels"])
    if p["student_layers"]:
        drop_layers(student, p["student_layers"])
    return student


def main(params_path: str = "params.yaml") -> dict:
    p = load_section("prune", params_path)
    data_dir, teacher_dir = upstream_dir("data", params_path), upstream_dir("teacher", params_path)
    seed_everything(p["seed"])
    threads = set_threads(p["threads"])
    from pipeline import inc, sparsity
    from pipeline.distill import layer_map
    from pipeline.models import load_tokenizer, load_trained, save_model, weights_sha256
    from pipeline.train import NoExtra, clear_checkpoint, evaluate, fit, run_fingerprint

    meta, train, dev = load_inputs(data_dir)
    teacher = load_trained(teacher_dir).eval().requires_grad_(False)
    student = build_student(p, meta, teacher_dir)
    misfits = sparsity.pattern_misfits(student, p["pattern"]) if p["target_sparsity"] > 0 else []
    if misfits:
        raise PruneError(f"prune.pattern = {p['pattern']!r} does not divide these layers' weights: "
                         f"{', '.join(misfits[:4])}{' ...' if len(misfits) > 4 else ''}; pick block sizes that do")
    dense = sparsity.summarize(teacher)
    dense_ref = dense["encoder_linear_params"]
    mapping = layer_map(student.config.num_hidden_layers, teacher.config.num_hidden_layers)
    pruners = []

    def prepare(optimizer, total_steps):
        if p["target_sparsity"] == 0:  # pure distillation, e.g. a layer-dropped student
            return NoExtra()
        pruners.append(inc.Pruner(student, optimizer, p, total_steps))
        return pruners[0]

    fp = run_fingerprint("prune", p, data_dir, weights_sha256(str(teacher_dir)))
    with Timer() as t:
        result = fit(student, train, dev, meta, p, make_loss(teacher, p, meta["problem_type"] == "regression",
                                                             mapping),
                     stage="prune", fp=fp, prepare=prepare,
                     eligible=lambda step: not pruners or step > pruners[0].end_step,
                     make_log=lambda resumed: dvclive_logger("prune", resumed, params_path))
        if pruners:
            pruners[0].detach()
        fin = finalize(student, p, teacher.config, dense_ref)
        after, achieved, tol, structured = fin["after"], fin["achieved"], fin["tolerance"], fin["structured"]
        scores = evaluate(student, dev, meta, p["eval_batch_size"])
        teacher_scores = evaluate(teacher, dev, meta, p["eval_batch_size"])
        with atomic_dir(p["out_dir"]) as out:
            save_model(student, load_tokenizer(str(data_dir / "tokenizer")), out, slimmed=structured)
            write_json(out / "sparsity.json", after)  # per-layer detail; metrics keep the summary
        clear_checkpoint(p)
    return write_metrics("prune", {
        **{k: v for k, v in scores.items()},
        **{f"delta_{k}": round(v - teacher_scores[k], 6) for k, v in scores.items()},
        "teacher": teacher_scores, "target_sparsity": p["target_sparsity"], "pattern": p["pattern"],
        "achieved_sparsity": round(achieved, 6), "tolerance": tol, "slimmed": structured,
        "nm_groups_fixed": fin["nm_groups_fixed"],
        **{k: v for k, v in after.items() if k != "layers"},
        "model_remaining_weights": round(after["model_nonzero"] / dense["model_params"], 6),
        "layer_sparsity_min": min(v["sparsity"] for v in after["layers"].values()),
        "layer_sparsity_max": max(v["sparsity"] for v in after["layers"].values()),
        "layer_shapes": [{"heads": l.attention.self.num_attention_heads, "ffn": l.intermediate.dense.out_features}
                         for l in getattr(student, student.base_model_prefix).encoder.layer],
        "history": result["history"], "steps": result["steps"], "resumed_from_step": result["resumed_from_step"],
        "train_samples_per_s": result["train_samples_per_s"], "train_tokens_per_s": result["train_tokens_per_s"],
        "padding_efficiency": result["padding_efficiency"], "train_time_s": result["train_time_s"],
        "wall_time_s": round(t.seconds, 2)}, threads, metrics_dir(params_path))


if __name__ == "__main__":
    main(*sys.argv[1:])
