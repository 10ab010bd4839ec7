"""2:4 on TensorRT against the dense FP16 twin, through onnxruntime's TensorRT provider (issue 26, item 7).

    python tools/gpu/trt24.py [--shape base|minilm] [--seq 128] [--out trt24.json]

Random weights of the chosen shape (speed does not depend on weight values; the 2:4 pattern is made
strict with pipeline.training.sparsity.enforce_n_m), exported once dense and once 2:4, each timed at
batch 1, 16 and 64 with FP16 engines: the 2:4 model with trt_sparsity_enable on, the dense twin with it
off. Needs onnxruntime-gpu (`bash setup.sh --gpu`) and an Ampere or later GPU; fails, naming what is
missing, when the TensorRT provider is absent (no fallback to CUDA or the CPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

SHAPES = {
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
}
BATCHES = (1, 16, 64)


def models(shape: str, work: Path) -> dict:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from pipeline.onnx_export.onnx import export_torch
    from pipeline.training.sparsity import encoder_linears, enforce_n_m

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=30522, **SHAPES[shape])).eval()
    (work / "dense").mkdir()
    out = {"dense": export_torch(model, work / "dense", 18)}
    with torch.no_grad():
        for lin in encoder_linears(model).values():
            lin.weight.mul_(
                lin.weight.abs()
                .view(lin.weight.shape[0], -1, 4)
                .argsort(-1)
                .argsort(-1)
                .ge(2)
                .view_as(lin.weight)
            )  # keep the 2 largest of every 4 inputs
    enforce_n_m(model, 2, 4)
    (work / "sparse").mkdir()
    out["2:4"] = export_torch(model, work / "sparse", 18)
    return out


def time_one(path: Path, sparse: bool, seq: int, engines: Path) -> dict:
    from pipeline.runtime.ort import make_session
    from pipeline.timing.harness import summarize, synthetic_feed, time_loop

    trt = {
        "trt_fp16_enable": True,
        "trt_sparsity_enable": sparse,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(engines),
    }
    sess, info = make_session(path, ["tensorrt"], allow_fallback=False, trt=trt)
    rows = []
    for batch in BATCHES:
        feed = synthetic_feed(batch, seq, 30522, 0)
        lat = time_loop(lambda: sess.run(["logits"], feed), warmup=5, min_iters=20, max_seconds=3.0)
        rows.append({"batch": batch, "seq_len": seq, "providers": info["used"], **summarize(lat, batch)})
    return {"sparse_enabled": sparse, "cells": rows}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=SHAPES, default="base")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--out", type=Path, default=Path("trt24.json"))
    args = ap.parse_args(argv)
    from pipeline.runtime.ort import check_available

    check_available(["tensorrt"], allow_fallback=False, key="tools/gpu/trt24.py")
    with tempfile.TemporaryDirectory() as tmp:
        paths = models(args.shape, Path(tmp))
        result = {
            "shape": args.shape,
            "dense_fp16": time_one(paths["dense"], False, args.seq, Path(tmp) / "e1"),
            "2:4_fp16": time_one(paths["2:4"], True, args.seq, Path(tmp) / "e2"),
        }
    for d, s in zip(result["dense_fp16"]["cells"], result["2:4_fp16"]["cells"]):
        print(
            f"b{d['batch']} s{d['seq_len']}: 2:4 {s['throughput_seq_per_s']} seq/s vs dense "
            f"{d['throughput_seq_per_s']} ({s['throughput_seq_per_s'] / d['throughput_seq_per_s']:.2f}x)"
        )
    args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    sys.exit(main() and 0)
