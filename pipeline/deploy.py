"""Stage `deploy`: per model, the bundle in the format this CPU ran fastest within eval's tolerance,
string-in where OpenVINO allows it, and model repositories for OVMS and Triton, each validated.

    python -m pipeline.deploy         # reads the `deploy` section of params.yaml

Per model: `bundle_dir/<model>/` (self-contained: runner.py, requirements.txt, manifest with the
target chosen and the bench figures it was chosen from), `out_dir/ovms/` (config.json, <model>/1/),
`out_dir/triton/` (<model> onnxruntime CPU, <model>-gpu onnxruntime + TensorRT, <model>-openvino).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from pipeline.core.common import (
    Timer,
    atomic_dir,
    cpu_info,
    details_path,
    read_json,
    set_threads,
    write_metrics,
)
from pipeline.core.params import load_section, metrics_dir, upstream_dir


LATENCY_LOOP = (10, 50, 2.0)  # warm-up calls, then at least 50 timed calls or 2 s: ~1 s per bundle at b1


def dev_rows(data_dir: Path) -> list[tuple[str, str | None]]:
    import json

    lines = (data_dir / "eval.jsonl").read_text().splitlines()
    return [(r["text"], r.get("text_pair")) for r in map(json.loads, filter(str.strip, lines))]


def runtime_config(target: str, compile_dir: Path) -> dict:
    """What the bundle's runtime is configured with: the same settings bench measured the target with."""
    from pipeline.runtime.backends import ov_config
    from pipeline.runtime.ort import PROVIDERS
    from pipeline.serving.target import TARGETS

    t = TARGETS[target]
    if t["runtime"] == "openvino":
        return ov_config(
            read_json(compile_dir / "compile_config.json"),
            t["source"],
            None if t["source"] == "int8.xml" else "f32",
            sparse=t["sparse"],
        )
    return {"providers": [PROVIDERS[n] for n in read_json(compile_dir / "ort_config.json")["providers"]]}


def fused_model(tokenizer_dir: Path, xml: Path, rows: list, max_length: int, atol: float, out: Path):
    """(fused xml path or None, record): the string-in IR, saved only once it passes the parity gate."""
    import openvino as ov

    from pipeline.serving.tokenizer import TokenizerConversionError, convert, fuse, parity

    pairs = rows[0][1] is not None
    try:
        tok, hf = convert(tokenizer_dir, pairs, max_length)
        fused = fuse(tok, xml)
    except TokenizerConversionError as e:
        print(f"[deploy] keeping the token-in model: {e}", file=sys.stderr)
        return None, {"fused": False, "why_not": str(e)}
    gate = parity(tok, fused, xml, hf, rows, max_length, atol)
    if not gate["passed"]:  # e.g. openvino-tokenizers breaks longest_first ties in pairs the other way
        why = (
            f"parity gate failed on {xml.name}: {gate['token_mismatch_rows']} of {gate['rows']} dev rows "
            f"tokenized unlike the HF tokenizer, logits max |diff| {gate['logits_max_abs_diff']:.2g}"
        )
        print(f"[deploy] keeping the token-in model: {why}", file=sys.stderr)
        return None, {"fused": False, "why_not": why, "parity": gate}
    ov.save_model(fused, str(out / "model.xml"), compress_to_fp16=False)
    return out / "model.xml", {"fused": True, "pairs": pairs, "parity": gate}


def string_in_latency(fused_dir: Path, token_dir: Path, row: tuple, threads: int) -> dict:
    """b1 end-to-end latency (tokenizing included) of the fused bundle against the token-in one."""
    from pipeline.serving.runner import Bundle
    from pipeline.timing.harness import summarize, time_loop

    out = {}
    for name, path in (("fused", fused_dir), ("unfused", token_dir)):
        b = Bundle(path, threads=threads)
        pair = None if row[1] is None else [row[1]]
        out[name] = summarize(time_loop(lambda: b.logits([row[0]], pair), *LATENCY_LOOP), 1)
    out["fused_over_unfused_p50"] = round(
        out["fused"]["latency_ms_p50"] / out["unfused"]["latency_ms_p50"], 3
    )
    return out


def archive(folder: Path) -> dict:
    """<folder>.tar.gz beside the bundle: the one file to copy to a device (tar -xzf, then runner.py)."""
    import tarfile

    path = folder.with_name(f"{folder.name}.tar.gz")
    with tarfile.open(path, "w:gz", compresslevel=6) as tar:
        tar.add(folder, arcname=folder.name)
    return {"file": path.name, "bytes": path.stat().st_size}


def row_near(rows: list, tokenizer_dir: Path, tokens: int) -> tuple:
    """The dev row whose encoding is closest to `tokens` long: the latency shape, with real text."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    return min(
        rows[:500], key=lambda r: abs(len(hf(r[0], r[1])["input_ids"]) - tokens)
    )  # 500: enough to find one


def build_bundles(
    model: str, target: dict, p: dict, dirs: dict, meta: dict, rows: list, out: Path, threads: int
) -> dict:
    """bundle_dir/<model>/ in the chosen target; for OpenVINO the string-in one when the tokenizer converts."""
    from pipeline.serving.bundle import write_bundle
    from pipeline.serving.target import TARGETS

    t, compiled = TARGETS[target["target"]], dirs["compile"] / model
    source = dirs["export"] / model / t["source"] if t["source"] == "model.onnx" else compiled / t["source"]
    common = dict(
        labels=meta["labels"],
        problem_type=meta["problem_type"],
        max_length=meta["max_length"],
        runtime_config=runtime_config(target["target"], compiled),
    )
    info = {
        "model": model,
        "task": meta["task"],
        "pairs": rows[0][1] is not None,
        "target": target,
        "cpu": cpu_info(),
        "compile": read_json(compiled / "compile_config.json"),
    }
    record = {"target": target["target"], "choice": target, "string_input": None}
    if t["runtime"] == "onnxruntime":
        write_bundle(
            out / model, "onnxruntime", {"model.onnx": source}, dirs["tokenizer"], **common, info=info
        )
        return record
    token_files = {"model.xml": source, "model.bin": source.with_suffix(".bin")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        xml, fused = (
            fused_model(dirs["tokenizer"], source, rows, meta["max_length"], p["parity_atol"], tmp)
            if p["string_input"]
            else (None, {"fused": False, "why_not": "deploy.string_input is false"})
        )
        record["string_input"] = fused
        if xml is None:  # the manifest says why the bundle is not string-in
            write_bundle(
                out / model,
                "openvino",
                token_files,
                dirs["tokenizer"],
                **common,
                info={**info, "string_input": fused},
            )
            return record
        write_bundle(
            out / model,
            "openvino-text",
            {"model.xml": xml, "model.bin": xml.with_suffix(".bin")},
            None,
            **common,
            info={**info, "string_input": fused},
        )
        write_bundle(tmp / "unfused", "openvino", token_files, dirs["tokenizer"], **common, info=info)
        row = row_near(rows, dirs["tokenizer"], p["latency_tokens"])
        record["latency_b1"] = {
            "tokens": p["latency_tokens"],
            **string_in_latency(out / model, tmp / "unfused", row, threads),
        }
    return record


def repositories(
    model: str, p: dict, dirs: dict, bundle: Path, meta: dict, rows: list, out: Path, target: dict
) -> dict:
    """out/ovms and out/triton entries for one model. OVMS serves the bundle's IR when the bundle is
    OpenVINO (string-in if fused), else the INT8 IR fused here; Triton gets ONNX (CPU INT8, GPU FP32
    with TensorRT) and the token-in INT8 IR on its openvino backend, which has no tokenizer ops."""
    from pipeline.serving import repository as repo
    from pipeline.serving.runner import CONFIG_FILE, MANIFEST_FILE
    from pipeline.serving.target import fastest_ov_int8

    compiled, engine = dirs["compile"] / model, read_json(bundle / MANIFEST_FILE)["engine"]
    with tempfile.TemporaryDirectory() as tmp:
        if engine.startswith("openvino"):
            xml, plugin, string_in = (
                bundle / "model.xml",
                read_json(bundle / CONFIG_FILE),
                engine == "openvino-text",
            )
        else:
            plugin = runtime_config(fastest_ov_int8(target["candidates"]), compiled)
            fused, why = (
                fused_model(
                    dirs["tokenizer"],
                    compiled / "int8.xml",
                    rows,
                    meta["max_length"],
                    p["parity_atol"],
                    Path(tmp),
                )
                if p["string_input"]
                else (None, {"fused": False, "why_not": "deploy.string_input is false"})
            )
            xml, string_in = fused or compiled / "int8.xml", fused is not None
        repo.write_ovms(out / "ovms", model, xml, plugin)
    tri, onnx_fp32, int8_onnx = out / "triton", dirs["export"] / model / "model.onnx", compiled / "int8.onnx"
    ins, outs = repo.model_io(int8_onnx)
    mbs = p["max_batch_size"]
    repo.write_triton(
        tri, model, int8_onnx, repo.triton_config(model, "onnxruntime", ins, outs, mbs, "KIND_CPU")
    )
    ins, outs = repo.model_io(onnx_fp32)
    repo.write_triton(
        tri,
        f"{model}-gpu",
        onnx_fp32,
        repo.triton_config(
            f"{model}-gpu",
            "onnxruntime",
            ins,
            outs,
            mbs,
            "KIND_GPU",
            accelerators=trt_accelerator(dirs["compile"], model),
        ),
    )
    ins, outs = repo.model_io(compiled / "int8.xml")
    ov_params = {k: plugin[k] for k in ("PERFORMANCE_HINT", "NUM_STREAMS") if k in plugin}
    repo.write_triton(
        tri,
        f"{model}-openvino",
        compiled / "int8.xml",
        repo.triton_config(f"{model}-openvino", "openvino", ins, outs, mbs, "KIND_CPU", parameters=ov_params),
    )
    return {
        "ovms": {
            "string_input": string_in,
            "plugin_config": plugin,
            **({} if string_in or engine.startswith("openvino") else {"why_not": why["why_not"]}),
        }
    }


def trt_accelerator(compile_dir: Path, model: str) -> dict:
    """Triton's TensorRT accelerator options from what compile was asked for (FP16 or INT8, else FP32)."""
    trt = read_json(compile_dir / model / "ort_config.json")["trt"]
    mode = "INT8" if trt["trt_int8_enable"] else "FP16" if trt["trt_fp16_enable"] else "FP32"
    return {
        "precision_mode": mode,
        "max_workspace_size_bytes": str(1 << 30),  # 1 GiB, Triton's example value
        "trt_engine_cache_enable": "true",
        "trt_engine_cache_path": "/tmp/trt_cache",
    }


def check_inputs(p: dict, params_path: str) -> tuple[dict, dict]:
    """Everything deploy reads, and the target of every model, before any conversion starts."""
    from pipeline.serving.target import choose

    dirs = {
        "compile": upstream_dir("compile", params_path),
        "export": upstream_dir("export", params_path),
        "data": upstream_dir("data", params_path),
    }
    dirs["tokenizer"] = dirs["data"] / "tokenizer"
    for m in p["models"]:
        for f in (
            *(
                dirs["compile"] / m / n
                for n in ("int8.xml", "fp32.xml", "int8.onnx", "compile_config.json", "ort_config.json")
            ),
            dirs["export"] / m / "model.onnx",
        ):
            if not f.is_file():
                raise FileNotFoundError(
                    f"deploy.models: {m} has no {f}; add it to export.models and compile.models"
                )
    found = {s: details_path(metrics_dir(params_path), s) for s in ("bench", "eval")}
    for stage, path in found.items():
        if not path.is_file():
            raise FileNotFoundError(f"deploy needs {path}: run {stage} first")
    bench, evals = read_json(found["bench"]), read_json(found["eval"])["results"]
    targets = {
        m: {
            **choose(p["target"], m, tuple(p["shape"]), bench["results"], evals),
            "bench_cpu": bench["hardware"],
        }
        for m in p["models"]
    }
    return dirs, targets


def main(params_path: str = "params.yaml") -> dict:
    p = load_section("deploy", params_path)
    dirs, targets = check_inputs(p, params_path)
    threads = set_threads(p["threads"])
    from pipeline.serving import repository as repo
    from pipeline.serving.bundle import bundle_size

    meta, rows = read_json(dirs["data"] / "meta.json"), dev_rows(dirs["data"])
    results = {}
    with Timer() as t:
        with atomic_dir(p["bundle_dir"]) as bundles, atomic_dir(p["out_dir"]) as serving:
            for m in p["models"]:
                target = targets[m]
                results[m] = build_bundles(m, target, p, dirs, meta, rows, bundles, threads)
                results[m]["bundle_size"] = bundle_size(bundles / m)
                if p["archive"]:
                    results[m]["archive"] = archive(bundles / m)
                results[m].update(repositories(m, p, dirs, bundles / m, meta, rows, serving, targets[m]))
                print(f"[deploy] {m}: {target['target']} ({target['reason']})")
            checks = {
                "ovms": repo.validate_ovms(serving / "ovms"),
                "triton": repo.validate_triton(serving / "triton"),
            }
    record = {
        "models": results,
        "repositories": checks,
        "wall_time_s": round(t.seconds, 2),
        "bundle_bytes": {m: r["bundle_size"]["bytes"] for m, r in results.items()},
    }
    return write_metrics("deploy", record, threads, metrics_dir(params_path), ("bundle_bytes", "wall_time_s"))


if __name__ == "__main__":
    main(*sys.argv[1:])
