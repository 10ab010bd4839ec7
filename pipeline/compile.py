"""Stage `compile`: OpenVINO IR (FP32, NNCF INT8) for CPUs, onnxruntime INT8 and sessions.

    python -m pipeline.compile         # reads the `compile` section of params.yaml

Per model: fp32.xml/.bin, int8.xml/.bin (zeros kept), int8.onnx (ORT dynamic INT8), the OpenVINO
compile configuration (explicit precision; sparse-weight decompression rate a little below the
measured sparsity), a per-FC-layer report of the kernel that ran, onnxruntime sessions on the
providers asked for (no silent fallback). The edge bundles and server repositories are the deploy
stage's: it picks their format from bench.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np

from pipeline.core.common import (
    Timer,
    atomic_dir,
    cpu_info,
    seed_everything,
    set_threads,
    write_json,
    write_metrics,
)
from pipeline.core.params import load_section, metrics_dir, upstream_dir
from pipeline.runtime.ort import check_available


def disk_size(path: Path) -> dict:
    """Raw and gzip bytes of a model's files (.xml + .bin, or .onnx): what copying it to a device costs."""
    files = [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]
    raw = sum(f.stat().st_size for f in files)
    gz = sum(len(gzip.compress(f.read_bytes(), 6)) for f in files)
    return {"bytes": raw, "gzip_bytes": gz}


def measured_sparsity(weights: dict) -> dict:
    """Zero fractions of the pruned MatMul weights (INT8 rounding alone zeroes a few % of the others):
    the weighted mean, for reports, and the least sparse layer, which the decompression rate must clear."""
    pruned = [w for w in weights.values() if w["zeros"] > 0.1]
    if not pruned:
        return {"mean": 0.0, "min": 0.0, "pruned_layers": 0}
    numel = [np.prod(w["shape"]) for w in pruned]
    return {
        "mean": float(np.average([w["zeros"] for w in pruned], weights=numel)),
        "min": min(w["zeros"] for w in pruned),
        "pruned_layers": len(pruned),
    }


def trt_options(p: dict) -> dict:
    return {
        "trt_fp16_enable": p["trt_fp16_enable"],
        "trt_int8_enable": p["trt_int8_enable"],
        "trt_sparsity_enable": p["trt_sparsity_enable"],
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": p["trt_engine_cache_path"],
    }


def compile_one(onnx_path: Path, out: Path, p: dict, calib: list, dev, meta: dict, threads: int) -> dict:
    from pipeline.runtime import openvino as dov
    from pipeline.runtime.ort import make_session, quantize_dynamic_int8
    from pipeline.core.tasks import compute_metrics
    from pipeline.core.tokens import feeds

    out.mkdir()
    fp32 = dov.convert(onnx_path)
    dov.save(fp32, out / "fp32.xml")
    base = dov.convert(onnx_path)
    base = dov.compress_embeddings(base) if p["embedding_bits"] == 4 else base
    int8 = dov.quantize_int8(base, calib, len(calib))
    dov.save(int8, out / "int8.xml")
    quantize_dynamic_int8(onnx_path, out / "int8.onnx")
    weights = dov.weight_constants(int8)
    sparsity = measured_sparsity(weights)
    config = dov.compile_config(
        sparsity["min"], p["inference_precision"], p["sparse_rate_margin"], p["min_sparse_rate"]
    )
    write_json(out / "compile_config.json", config)
    write_json(
        out / "ort_config.json",
        {"providers": p["ort_providers"], "allow_fallback": p["allow_fallback"], "trt": trt_options(p)},
    )
    compiled = dov.compile_model(out / "int8.xml", {**config, "INFERENCE_NUM_THREADS": str(threads)})
    dev_feeds = feeds(dev, 32)
    scores = compute_metrics(
        dov.logits(compiled, dev_feeds), dev.labels, meta["metrics"], meta["problem_type"]
    )
    report = dov.fc_report(compiled, int8, config, any(f.startswith("amx") for f in cpu_info()["isa"]))
    write_json(out / "fc_report.json", report)
    sessions = {}
    for prec in ("fp32", "int8"):
        path = onnx_path if prec == "fp32" else out / "int8.onnx"
        sess, info = make_session(
            path, p["ort_providers"], allow_fallback=p["allow_fallback"], threads=threads, trt=trt_options(p)
        )
        names = {i.name for i in sess.get_inputs()}
        sess.run(["logits"], {k: v for k, v in dev_feeds[0].items() if k in names})
        sessions[prec] = info
    return {
        "weight_sparsity": round(sparsity["mean"], 6),
        "weight_sparsity_min": round(sparsity["min"], 6),
        "pruned_fc_layers": sparsity["pruned_layers"],
        "compile_config": config,
        "inference_precision": dov.actual_precision(compiled),
        "int8_ir_dev": scores,
        "embedding_bits": p["embedding_bits"],  # the OpenVINO INT8 IR's word-embedding table
        "sparse_fc_layers": report["sparse_fc_layers"],
        "fc_layers": report["fc_layers"],
        "fc_reasons": report["reasons"],
        "fc_primitives": report["primitives"],
        "ort_sessions": sessions,
        "sizes": {
            "onnx_fp32": disk_size(onnx_path),
            "onnx_int8": disk_size(out / "int8.onnx"),
            "ir_fp32": disk_size(out / "fp32.xml"),
            "ir_int8": disk_size(out / "int8.xml"),
        },
    }


def main(params_path: str = "params.yaml") -> dict:
    p = load_section("compile", params_path)
    # Before the OpenVINO conversion and NNCF work (about a minute), not at the first onnxruntime session after it.
    check_available(p["ort_providers"], allow_fallback=p["allow_fallback"], key="compile.ort_providers")
    onnx_dir, data_dir = upstream_dir("export", params_path), upstream_dir("data", params_path)
    missing = [m for m in p["models"] if not (onnx_dir / m / "model.onnx").is_file()]
    if missing:
        raise FileNotFoundError(
            f"compile.models {missing}: no ONNX under {onnx_dir}; add them to export.models"
        )
    seed_everything(p["seed"])
    threads = set_threads(p["threads"])
    from pipeline.core.tokens import feeds, load_inputs

    meta, train, dev = load_inputs(data_dir)
    calib = feeds(train, 1, p["calibration_samples"])  # batch 1: NNCF's subset_size counts items
    results = {}
    with Timer() as t:
        with atomic_dir(p["out_dir"]) as out:
            for name in p["models"]:
                results[name] = compile_one(
                    onnx_dir / name / "model.onnx", out / name, p, calib, dev, meta, threads
                )
                print(
                    f"[compile] {name}: {results[name]['sparse_fc_layers']}/{results[name]['fc_layers']} FC layers "
                    f"on the sparse kernel; INT8 IR dev {results[name]['int8_ir_dev']}"
                )
    return write_metrics(
        "compile",
        {
            "models": results,
            "wall_time_s": round(t.seconds, 2),
            "sparse_fc_layers": {m: r["sparse_fc_layers"] for m, r in results.items()},
        },
        threads,
        metrics_dir(params_path),
        ("sparse_fc_layers", "wall_time_s"),
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
