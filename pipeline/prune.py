"""Stage `prune`: prune at distilling (SparseBERT's knowledge-aware sparse pruning).

    python -m pipeline.prune           # reads the `prune` section of params.yaml
    torchrun --nproc_per_node 2 -m pipeline.prune [params.yaml]         # data-parallel (prune.launcher)

The student starts from the pre-trained checkpoint (or the teacher) and is sparsified on INC's
schedule while it learns from the fine-tuned teacher's logits and hidden states, so it keeps
both the pre-trained and the task knowledge. Structured students (`channelx1`) are slimmed;
with `vocab: task` the word embedding keeps only the task's tokens and a frequent core (pipeline.core.vocab).
Output (prune.out_dir): the student (safetensors + tokenizer; slimmed and trimmed ones reload through
pipeline.core.models.load_trained) and metrics/prune.json.
"""

from __future__ import annotations

import sys

from pathlib import Path

from pipeline.core.common import (
    Timer,
    atomic_dir,
    read_json,
    seed_everything,
    set_threads,
    write_json,
    write_metrics,
)
from pipeline.core.params import load_section, metrics_dir, upstream_dir
from pipeline.core.tasks import QUALITY, SCORES
from pipeline.training import device, scale
from pipeline.training.augment import training_rows
from pipeline.training.posthoc import TailAverage, apply_average, apply_calibration, apply_vocab, held_out
from pipeline.training.schedule import lr_lambda
from pipeline.training.student import PruneError

HEADLINE = (
    *SCORES,
    *(f"delta_{k}" for k in SCORES),
    "baseline_score",
    "achieved_sparsity",
    "encoder_remaining_weights",
    "model_remaining_weights",
    "vocab_rows_kept",
    "selected_epoch",
    "epochs",
    "train_time_s",
    "plan_time_s",
    "wall_time_s",
)


def check_teacher(teacher_dir: Path, allow_weak: bool) -> dict:
    """The teacher's quality.json; a teacher that did not beat the majority-class baseline by
    teacher.min_margin is refused, before any model loads, unless prune.allow_weak_teacher."""
    path = teacher_dir / QUALITY
    if not path.is_file():
        raise PruneError(
            f"{path} is missing: the teacher was trained by an older kasp; rerun `dvc repro teacher`"
        )
    q = read_json(path)
    if not q["beats_baseline"] and not allow_weak:
        raise PruneError(
            f"the teacher scores {q['score']:.4f} on dev against {q['baseline_score']:.4f} for always "
            f"answering the majority class (margin {q['margin_over_baseline']:+.4f}, below "
            f"teacher.min_margin {q['min_margin']}): a student would learn little from it. "
            f"{scale.weak_teacher_advice(q['recipe']) if 'recipe' in q else 'Train a better teacher.'} "
            "Or set prune.allow_weak_teacher: true"
        )
    return q


def reached(planned: dict, student) -> dict:
    """The slimmed student's shapes against the plan, and the speed-up the table predicts for them;
    a student predicted below a target fails the stage (kept, with the reason, in the error)."""
    from pipeline.core.models import slim_shapes
    from pipeline.training import plan

    shapes = slim_shapes(student)
    model = planned["cost_model"]
    speed = {s: round(model.speedup(s, shapes), 3) for s in planned["targets"]}
    short = {s: v for s, v in speed.items() if v < planned["targets"][s] * 0.98}
    if short:
        raise PruneError(
            f"the slimmed student ({shapes}) is predicted at {short}, below the speed targets "
            f"{planned['targets']}: {plan.check_reached(shapes, planned)}"
        )
    return {"predicted_speedup": speed, "matches_plan": plan.check_reached(shapes, planned) or "yes"}


def pruner_hook(p: dict, acc, pruning: bool, planned: dict | None = None):
    """fit()'s `prepare`: INC's pruner on the model and Accelerate's optimizer, its mask hashes checked
    across ranks at every update, and with average_tail the tail's weight average hooked after it.
    Returns (prepare, [the pruner once built], [the averager once built], [agreed mask hashes])."""
    from pipeline.training import inc
    from pipeline.training.checkpoint import NoExtra
    from pipeline.training.schedule import step_range

    pruners, averagers, synced = [], [], []

    def prepare(model, optimizer, total_steps):
        extra = NoExtra()  # pure distillation, e.g. a layer-dropped student
        if pruning:
            extra = inc.Pruner(
                model,
                optimizer,
                p,
                total_steps,
                structure=planned,
                on_update=lambda masks, step: synced.append(device.check_in_sync(acc, masks, step)),
            )
            pruners.append(extra)
        if p["average_tail"]:  # from the step after the last mask update (INC counts steps from 0)
            extra = TailAverage(model, optimizer, step_range(p, total_steps)[1] + 1, extra)
            averagers.append(extra)
        return extra

    return prepare, pruners, averagers, synced


def main(params_path: str = "params.yaml") -> dict:
    p = load_section("prune", params_path)
    data_dir, teacher_dir = upstream_dir("data", params_path), upstream_dir("teacher", params_path)
    quality = check_teacher(teacher_dir, p["allow_weak_teacher"])
    placement, acc = device.setup(p, "prune")  # a missing CUDA or bf16 fails here, before the teacher cache
    seed_everything(p["seed"])
    threads = set_threads(p["threads"])
    from pipeline.training.plan import for_params

    with Timer() as planning:  # on a CPU with no latency table yet, it times candidate shapes first
        planned = for_params(p, params_path, threads, acc)
    from pipeline.core.models import load_tokenizer, load_trained, save_model, weights_sha256
    from pipeline.core.tasks import baseline_scores
    from pipeline.core.tokens import load_inputs
    from pipeline.training import sparsity, student as st
    from pipeline.training.checkpoint import clear_checkpoint, run_fingerprint
    from pipeline.training.distill import layer_map
    from pipeline.training.loop import TRAIN_KEYS, Hooks, Run, evaluate, fit
    from pipeline.training.teacher_cache import maybe_build

    meta, train_all, dev = load_inputs(data_dir)
    train, held, select_on, selection = held_out(p, meta, train_all)
    tokenizer = load_tokenizer(str(data_dir / "tokenizer"))
    rows, augmented = training_rows(p, train, tokenizer)
    p, recipe = scale.student(p, len(rows))
    teacher = load_trained(teacher_dir).eval().requires_grad_(False).to(acc.device)
    student = st.build_student(p, meta, teacher_dir, teacher, planned and planned["keep_layers"])
    st.check_pattern(student, p)
    dense = sparsity.summarize(teacher)
    mapping = layer_map(student.config.num_hidden_layers, teacher.config.num_hidden_layers)
    t_hidden, t_att = st.teacher_layers(p, mapping)
    cache, cache_info = maybe_build(teacher, rows, t_hidden, p["teacher_cache_mb"], t_att)
    loss_fn = st.make_loss(teacher, p, meta["problem_type"] == "regression", mapping, cache)
    pruning = p["target_sparsity"] > 0 or bool(
        planned and (planned["mha_sparsity"] or planned["ffn_sparsity"])
    )
    prepare, pruners, averagers, synced = pruner_hook(p, acc, pruning, planned)
    fp = run_fingerprint("prune", p, data_dir, weights_sha256(str(teacher_dir)))
    with Timer() as t:
        run = Run("prune", fp, acc, placement, metrics_dir(params_path).parent)
        hooks = Hooks(
            prepare,
            eligible=lambda step: not pruners or step > pruners[0].end_step,
            schedule=lambda total: lr_lambda(p, total, pruning),
        )
        result = fit(student, rows, dev, meta, p, loss_fn, run, hooks, select_on=select_on)
        averaged = apply_average(averagers, student, dev, meta, p, acc.is_main_process)
        if pruners:
            pruners[0].detach()
        synced.append(
            device.check_in_sync(acc, sparsity.zero_masks(student), result["steps"])
        )  # final zeros too
        if not acc.is_main_process:  # rank 0 alone finalizes, scores, saves and writes metrics
            return device.finish(acc, result)
        fin = st.finalize(student, p, teacher.config, dense["encoder_linear_params"], planned)
        speed = reached(planned, student) if planned else None
        vocab = apply_vocab(p, student, train_all, dev, meta, tokenizer)  # train's ids, held-out rows too
        calibrated = apply_calibration(
            p, student, held, dev, meta
        )  # on the weights that ship, N:M made strict
        scores, teacher_scores = (evaluate(m, dev, meta, p["eval_batch_size"]) for m in (student, teacher))
        with atomic_dir(p["out_dir"]) as out:
            save_model(student, tokenizer, out, slimmed=fin["structured"])
            write_json(out / "sparsity.json", fin["after"])  # per-layer detail; metrics keep the summary
        clear_checkpoint(p)
    baseline = baseline_scores(train.labels, dev.labels, meta["metrics"], meta["problem_type"])
    metrics = write_metrics(
        "prune",
        {
            **scores,
            **{f"delta_{k}": round(v - teacher_scores[k], 6) for k, v in scores.items()},
            **{f"baseline_{k}": v for k, v in baseline.items()},
            "teacher": teacher_scores,
            "teacher_quality": quality,
            "target_sparsity": p["target_sparsity"],
            "pattern": p["pattern"],
            "preset": p["recipe"],
            **selection,
            "selected_epoch": (result["best"] or {}).get("epoch", p["epochs"]),
            "epochs": p["epochs"],
            "recipe": recipe,
            **st.sparsity_metrics(student, fin, dense),
            **{k: result[k] for k in TRAIN_KEYS},
            "teacher_cache": cache_info,
            "structure_plan": planned and {k: v for k, v in planned.items() if k != "cost_model"},
            "structure_reached": speed,
            "augment": augmented,
            "tail_average": averaged,
            "calibration": calibrated,
            "vocab": vocab,
            **({"vocab_rows_kept": vocab["rows_kept"]} if vocab else {}),
            "plan_time_s": round(planning.seconds, 2),
            "wall_time_s": round(planning.seconds + t.seconds, 2),
            "mask_sync": {"checks": len(synced), "final_digest": synced[-1]},
        },
        threads,
        metrics_dir(params_path),
        HEADLINE,
    )
    device.finish(acc)
    return metrics


if __name__ == "__main__":
    main(*sys.argv[1:])
