"""How small a trained student's OpenVINO INT8 bundle gets, and what each step costs on dev: the full
vocabulary (what ships by default), the vocabulary trimmed to the task (prune.vocab: task) and that with
the word-embedding table in 4 bits (compile.embedding_bits: 4), each against the dense FP32 teacher.

    python -m tools.diagnostics.bundle_size PARAMS STUDENT_DIR [STUDENT_DIR ...] [--out FILE.json]

PARAMS is the profile's params file: its data and teacher stages' outputs are read, and its prune and
compile sections give vocab_core and the calibration rows. Each STUDENT_DIR is a prune output (a seed
run's models/student). Nothing is trained and dev chooses nothing: the steps are applied after training
the way prune and compile apply them, and dev only scores each. Sizes are the token-in bundle's files,
gzip level 6 file by file (pipeline.serving.bundle.bundle_size); the teacher's is its FP32 ONNX bundle.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

VARIANTS = (("full", 8), ("task", 8), ("task", 4))  # (vocabulary, word-embedding bits)


def bundle(model_files: dict, engine: str, data_dir: Path, meta: dict, out: Path) -> dict:
    config = {"providers": ["CPUExecutionProvider"]} if engine == "onnxruntime" else {}
    from pipeline.serving.bundle import bundle_size, write_bundle

    write_bundle(
        out,
        engine,
        model_files,
        data_dir / "tokenizer",
        labels=meta["labels"],
        problem_type=meta["problem_type"],
        max_length=meta["max_length"],
        runtime_config=config,
        info={"tool": "tools.diagnostics.bundle_size"},
    )
    return bundle_size(out)


def variant(student_dir: Path, vocab: str, bits: int, ctx: dict, work: Path) -> dict:
    """One student, one (vocabulary, bits): trimmed as prune trims, compiled as compile compiles."""
    from pipeline.core.models import load_trained
    from pipeline.core.tasks import compute_metrics
    from pipeline.core.tokens import feeds
    from pipeline.onnx_export.onnx import export_torch
    from pipeline.runtime import openvino as dov
    from pipeline.training.posthoc import apply_vocab

    student = load_trained(student_dir).eval()
    p = {**ctx["prune"], "vocab": vocab}
    trimmed = apply_vocab(p, student, ctx["train"], ctx["dev"], ctx["meta"], ctx["tokenizer"])
    (work / "onnx").mkdir(parents=True)
    onnx_path = export_torch(student, work / "onnx", 18)
    ir = dov.convert(onnx_path)
    ir = dov.compress_embeddings(ir) if bits == 4 else ir
    xml = work / "int8.xml"
    dov.save(dov.quantize_int8(ir, ctx["calib"], len(ctx["calib"])), xml)
    compiled = dov.compile_model(xml, {"INFERENCE_PRECISION_HINT": "f32"})
    dev, meta = ctx["dev"], ctx["meta"]
    scores = compute_metrics(
        dov.logits(compiled, feeds(dev, 32)), dev.labels, meta["metrics"], meta["problem_type"]
    )
    files = {"model.xml": xml, "model.bin": xml.with_suffix(".bin")}
    return {
        "vocab": vocab,
        "embedding_bits": bits,
        "ov_int8_dev": scores,
        "vocab_rows_kept": trimmed and trimmed["rows_kept"],
        "dev_oov_token_fraction": trimmed and trimmed["dev_oov_token_fraction"],
        "bundle": bundle(files, "openvino", ctx["data_dir"], meta, work / "bundle"),
    }


def context(params: str) -> dict:
    from pipeline.core.models import load_tokenizer
    from pipeline.core.params import load_section, upstream_dir
    from pipeline.core.tokens import feeds, load_inputs

    data_dir = upstream_dir("data", params)
    meta, train, dev = load_inputs(data_dir)
    compile_ = load_section("compile", params)
    return {
        "prune": load_section("prune", params),
        "data_dir": data_dir,
        "teacher_dir": upstream_dir("teacher", params),
        "meta": meta,
        "train": train,
        "dev": dev,
        "tokenizer": load_tokenizer(str(data_dir / "tokenizer")),
        "calib": feeds(train, 1, compile_["calibration_samples"]),
    }


def teacher_size(ctx: dict, work: Path) -> dict:
    from pipeline.core.models import load_trained
    from pipeline.onnx_export.onnx import export_torch

    (work / "onnx").mkdir(parents=True)
    onnx_path = export_torch(load_trained(ctx["teacher_dir"]).eval(), work / "onnx", 18)
    return bundle({"model.onnx": onnx_path}, "onnxruntime", ctx["data_dir"], ctx["meta"], work / "bundle")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("params")
    ap.add_argument("students", nargs="+", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    missing = [str(s) for s in args.students if not (s / "config.json").is_file()]
    if missing:
        raise SystemExit(f"not a prune output (no config.json): {', '.join(missing)}")
    ctx = context(args.params)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        record = {"teacher_fp32_bundle": teacher_size(ctx, tmp / "teacher"), "students": {}}
        for i, s in enumerate(args.students):
            rows = [variant(s, v, b, ctx, tmp / f"{i}-{v}-{b}") for v, b in VARIANTS]
            record["students"][str(s)] = rows
            for r in rows:
                ratio = record["teacher_fp32_bundle"]["gzip_bytes"] / r["bundle"]["gzip_bytes"]
                print(
                    f"{s} vocab {r['vocab']} {r['embedding_bits']}-bit table: "
                    f"{r['bundle']['gzip_bytes'] / 1e6:.2f} MB gzip (1/{ratio:.1f} of the FP32 teacher), "
                    f"OV INT8 dev {r['ov_int8_dev']}"
                )
    if args.out:
        args.out.write_text(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    main()
