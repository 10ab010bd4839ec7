"""Stage `export`: teacher and student to ONNX (dynamic batch and sequence), each behind a parity gate.

    python -m pipeline.export          # reads the `export` section of params.yaml

A model whose ONNX logits drift past export.atol on real dev batches, or whose weights lose or
gain zeros, fails the stage and nothing is kept. Output: export.out_dir/<model>/model.onnx and
metrics/export.json.
"""

from __future__ import annotations

import sys

from pipeline.core.common import Timer, atomic_dir, seed_everything, set_threads, write_metrics
from pipeline.core.models import MODEL_STAGES
from pipeline.core.params import load_section, metrics_dir, upstream_dir


def main(params_path: str = "params.yaml") -> dict:
    p = load_section("export", params_path)
    sources = {name: upstream_dir(MODEL_STAGES[name], params_path) for name in p["models"]}
    data_dir = upstream_dir("data", params_path)
    seed_everything(p["seed"])
    threads = set_threads(p["threads"])
    from pipeline.onnx_export.onnx import export, gate
    from pipeline.core.models import load_trained
    from pipeline.training.sparsity import summarize
    from pipeline.core.tokens import load_inputs

    meta, _, dev = load_inputs(data_dir)
    results = {}
    with Timer() as t, atomic_dir(p["out_dir"]) as out:
        for name, src in sources.items():
            model = load_trained(src).eval()
            (out / name).mkdir()
            with Timer() as te:
                path = export(model, out / name, p["exporter"], p["opset"])
            figures = gate(
                model, path, dev, p["parity_batch_sizes"], p["parity_examples"], p["atol"], threads
            )
            results[name] = {
                **figures,
                "export_s": round(te.seconds, 2),
                "onnx_bytes": path.stat().st_size,
                "encoder_linear_sparsity": summarize(model)["encoder_linear_sparsity"],
            }
            print(
                f"[export] {name}: max |diff| {figures['max_abs_diff']:.2e}, zeros kept: {figures['zeros']['ok']}"
            )
    return write_metrics(
        "export",
        {
            "exporter": p["exporter"],
            "opset": p["opset"],
            "task": meta["task"],
            "models": results,
            "wall_time_s": round(t.seconds, 2),
            "max_abs_diff": {m: r["max_abs_diff"] for m, r in results.items()},
        },
        threads,
        metrics_dir(params_path),
        ("max_abs_diff", "wall_time_s"),
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
