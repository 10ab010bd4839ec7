"""Stage `teacher`: fine-tune the dense teacher on the tokenized task.

    python -m pipeline.teacher         # reads the `teacher` section of params.yaml
    torchrun --nproc_per_node 2 -m pipeline.teacher [params.yaml]       # data-parallel (teacher.launcher)

Output (teacher.out_dir): a save_pretrained directory (safetensors + tokenizer) holding the last epoch,
or with `teacher.selection: train_split` (the default) the best one on a split carved from train (never the
dev set the report scores), and quality.json (its dev score against the majority-class baseline).
How long it trains and at which learning rate scale with the task (pipeline.training.scale);
`teacher.search_learning_rates` trains one teacher per rate and keeps the best on that split;
metrics/teacher.json; training curves in dvclive/teacher.
"""

from __future__ import annotations

import sys

from pipeline.core.common import Timer, atomic_dir, seed_everything, set_threads, write_json, write_metrics
from pipeline.core.params import load_section, metrics_dir, upstream_dir
from pipeline.core.tasks import SCORES

# metrics/teacher.json; the rest goes to metrics/details/teacher.json
HEADLINE = (
    *SCORES,
    "baseline_score",
    "margin_over_baseline",
    "beats_baseline",
    "selected_epoch",
    "epochs",
    "train_time_s",
    "wall_time_s",
)


def task_loss(model, batch, idx):
    return model(**batch).loss, {}


def search(p: dict, meta: dict, train, dev, select_on, data_dir, acc, placement, log_root):
    """Train the teacher, or with teacher.search_learning_rates one per rate, each shipping its best epoch on
    the split carved from train; the rate whose best epoch scored highest there wins (dev is never
    compared). Returns (model, fit's result, params as trained, the recipe with every trial)."""
    from pipeline.core.models import load_classifier, start_model
    from pipeline.training import scale
    from pipeline.training.checkpoint import clear_checkpoint, run_fingerprint
    from pipeline.training.loop import Run, fit

    won, trials = None, []
    for lr in p["search_learning_rates"] or [p["learning_rate"]]:
        seed_everything(p["seed"])  # every trial starts from the same head and batch order
        model = load_classifier(start_model(meta), meta["num_labels"], meta["problem_type"], meta["labels"])
        tp, recipe = scale.teacher({**p, "learning_rate": lr}, len(train), model.config.hidden_size)
        run = Run("teacher", run_fingerprint("teacher", tp, data_dir), acc, placement, log_root)
        result = fit(model, train, dev, meta, tp, task_loss, run, select_on=select_on)
        clear_checkpoint(tp)
        held = (result["best"] or {}).get("score")
        trials.append(
            {
                "learning_rate": tp["learning_rate"],
                "held_out_score": held,
                "selected_epoch": (result["best"] or {}).get("epoch"),
            }
        )
        if won is None or held is not None and held > won[1]["best"]["score"]:
            won = (model, result, tp, recipe)
    model, result, tp, recipe = won
    return model, result, tp, {**recipe, "trials": trials} if p["search_learning_rates"] else recipe


def main(params_path: str = "params.yaml") -> dict:
    p = load_section("teacher", params_path)
    data_dir = upstream_dir("data", params_path)
    from pipeline.training import device

    placement, acc = device.setup(p, "teacher")  # a missing CUDA or bf16 fails here, before any work
    seed_everything(p["seed"])
    threads = set_threads(p["threads"])
    from pipeline.core.models import load_tokenizer, save_model
    from pipeline.core.tasks import QUALITY, baseline_scores, teacher_quality
    from pipeline.core.tokens import load_inputs
    from pipeline.training import scale
    from pipeline.training.loop import TRAIN_KEYS, evaluate, selection_sets

    meta, train, dev = load_inputs(data_dir)
    train, select_on, selection = selection_sets(p, train)
    with Timer() as t:
        model, result, p, recipe = search(
            p, meta, train, dev, select_on, data_dir, acc, placement, log_root=metrics_dir(params_path).parent
        )
        if not acc.is_main_process:  # rank 0 alone scores, saves and writes metrics
            return device.finish(acc, result)
        scores = evaluate(model, dev, meta, p["eval_batch_size"])
        baseline = baseline_scores(train.labels, dev.labels, meta["metrics"], meta["problem_type"])
        q = {**teacher_quality(scores, baseline, p["min_margin"]), "recipe": recipe}
        with atomic_dir(p["out_dir"]) as out:
            save_model(model, load_tokenizer(str(data_dir / "tokenizer")), out)
            write_json(out / QUALITY, q)
    if not q["beats_baseline"]:
        print(
            f"[teacher] WEAK TEACHER: dev score {q['score']:.4f} against {q['baseline_score']:.4f} for always "
            f"answering the majority class (margin {q['margin_over_baseline']:+.4f} < teacher.min_margin "
            f"{p['min_margin']}); prune will refuse it unless prune.allow_weak_teacher is true.",
            scale.weak_teacher_advice(recipe),
            file=sys.stderr,
        )
    best = result["best"] or {}
    metrics = write_metrics(
        "teacher",
        {
            **scores,
            **{f"baseline_{k}": v for k, v in baseline.items()},
            **q,
            **selection,
            "selected_epoch": best.get("epoch", p["epochs"]),
            "epochs": p["epochs"],
            "recipe": recipe,
            **{k: result[k] for k in TRAIN_KEYS},
            "wall_time_s": round(t.seconds, 2),
            "params": sum(x.numel() for x in model.parameters()),
        },
        threads,
        metrics_dir(params_path),
        HEADLINE,
    )
    device.finish(acc)
    return metrics


if __name__ == "__main__":
    main(*sys.argv[1:])
