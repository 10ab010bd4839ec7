"""Stage `teacher`: fine-tune the dense teacher on the tokenized task.

    python -m pipeline.teacher         # reads the `teacher` section of params.yaml

Output (teacher.out_dir): a save_pretrained directory (safetensors + tokenizer) holding the best
dev-score epoch; metrics/teacher.json; training curves in dvclive/teacher.
"""
from __future__ import annotations

import sys

from pipeline.core.common import Timer, atomic_dir, seed_everything, set_threads, write_metrics
from pipeline.core.params import load_section, metrics_dir, upstream_dir
from pipeline.core.tasks import SCORES

HEADLINE = (*SCORES, "best_epoch", "train_time_s", "wall_time_s")  # metrics/teacher.json; the rest: details/


def task_loss(model, batch, idx):
    return model(**batch).loss, {}


def main(params_path: str = "params.yaml") -> dict:
    p = load_section("teacher", params_path)
    data_dir = upstream_dir("data", params_path)
    seed_everything(p["seed"])
    threads = set_threads(p["threads"])
    from pipeline.core.models import load_classifier, load_tokenizer, resolve_model, save_model
    from pipeline.core.tokens import load_inputs
    from pipeline.training.checkpoint import clear_checkpoint, run_fingerprint
    from pipeline.training.loop import fit

    meta, train, dev = load_inputs(data_dir)
    model = load_classifier(resolve_model(meta["model"]), meta["num_labels"], meta["problem_type"], meta["labels"])
    fp = run_fingerprint("teacher", p, data_dir)
    with Timer() as t:
        result = fit(model, train, dev, meta, p, task_loss, stage="teacher", fp=fp,
                     log_root=metrics_dir(params_path).parent)
        with atomic_dir(p["out_dir"]) as out:
            save_model(model, load_tokenizer(str(data_dir / "tokenizer")), out)
        clear_checkpoint(p)
    best = result["best"]
    return write_metrics("teacher", {
        **{k: v for k, v in best.items() if k not in ("epoch", "step")}, "best_epoch": best["epoch"],
        "history": result["history"], "steps": result["steps"], "resumed_from_step": result["resumed_from_step"],
        "train_samples_per_s": result["train_samples_per_s"], "train_tokens_per_s": result["train_tokens_per_s"],
        "padding_efficiency": result["padding_efficiency"], "train_time_s": result["train_time_s"],
        "wall_time_s": round(t.seconds, 2), "params": sum(x.numel() for x in model.parameters())}, threads,
        metrics_dir(params_path), HEADLINE)


if __name__ == "__main__":
    main(*sys.argv[1:])
