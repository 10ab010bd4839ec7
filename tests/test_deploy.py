"""deploy: the format chosen from bench and eval (AMX-like and AVX2-like fixtures), the string-in model
and its parity gate, and the OVMS and Triton repositories validated the way their servers read them."""

import copy
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from pipeline.core.schema import TARGET_CHOICES
from pipeline.serving.target import CHOICES, TargetError, choose, fastest_ov_int8

# Student throughput at b32 x s128 (seq/s), measured on an AMX Xeon and an AVX2-only EPYC (docs/results.md)
AMX = {"ov-int8": 317.6, "ov-fp32": 98.6, "ort-int8": 174.6}
AVX2 = {"ov-int8": 27.5, "ov-fp32": 29.5, "ort-int8": 51.2}


def bench_rows(figures: dict, model="student", shape=(32, 128)) -> list[dict]:
    return [
        {
            "model": model,
            "backend": b,
            "streams": 1,
            "batch": shape[0],
            "seq_len": shape[1],
            "throughput_seq_per_s": v,
            "latency_ms_p50": 1000 * shape[0] / v,
        }
        for b, v in figures.items()
    ]


def eval_rows(flagged=(), model="student") -> list[dict]:
    return [
        {"model": model, "backend": b, "flagged": b in flagged}
        for b in ("ov-int8", "ov-int8-dense", "ov-fp32", "ort-int8", "ort-fp32")
    ]


def test_schema_targets_are_the_target_registry():
    assert TARGET_CHOICES == CHOICES


@pytest.mark.parametrize("figures,want", [(AMX, "openvino-int8"), (AVX2, "onnxruntime-int8")])
def test_auto_picks_the_fastest_on_the_machine_that_benched(figures, want):
    got = choose("auto", "student", (32, 128), bench_rows(figures), eval_rows())
    assert got["target"] == want and got["requested"] == "auto"
    assert {c["target"]: c["throughput_seq_per_s"] for c in got["candidates"]}["openvino-fp32"] == figures[
        "ov-fp32"
    ]


def test_auto_skips_a_target_outside_eval_tolerance_and_other_shapes():
    got = choose(
        "auto",
        "student",
        (32, 128),
        bench_rows(AVX2) + bench_rows({"ov-int8": 1e6}, shape=(1, 32)),
        eval_rows(flagged=("ort-int8",)),
    )
    assert got["target"] == "openvino-fp32"  # ort-int8 is faster but drifted; the b1 cell is another shape


def test_auto_turns_the_sparse_kernel_off_when_bench_says_it_is_slower():
    """The 90% student on an AMX Xeon (issue 26): the sparse kernel at 250.4 seq/s, the same IR without it at 290.9."""
    got = choose(
        "auto",
        "student",
        (32, 128),
        bench_rows({**AMX, "ov-int8": 250.4, "ov-int8-dense": 290.9}),
        eval_rows(),
    )
    assert got["target"] == "openvino-int8-dense"
    assert fastest_ov_int8(got["candidates"]) == "openvino-int8-dense"
    kept = choose("auto", "student", (32, 128), bench_rows({**AMX, "ov-int8-dense": 300.0}), eval_rows())
    assert kept["target"] == "openvino-int8"


def test_bundle_config_carries_the_kernel_choice(tmp_path):
    from pipeline.deploy import runtime_config

    config = {"INFERENCE_PRECISION_HINT": "f32", "CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE": "0.8800"}
    (tmp_path / "compile_config.json").write_text(json.dumps(config))
    assert runtime_config("openvino-int8", tmp_path) == config
    assert runtime_config("openvino-int8-dense", tmp_path) == {"INFERENCE_PRECISION_HINT": "f32"}


def test_named_target_is_kept_and_says_when_eval_flagged_it():
    got = choose("onnxruntime-int8", "student", (32, 128), bench_rows(AMX), eval_rows(flagged=("ort-int8",)))
    assert got["target"] == "onnxruntime-int8" and "tolerance" in got["reason"]


def test_no_candidate_and_unknown_target_are_clear_errors():
    with pytest.raises(TargetError, match="bench.backends"):
        choose("auto", "student", (32, 128), bench_rows(AMX, model="teacher"), eval_rows())
    with pytest.raises(TargetError, match="allowed: auto, openvino-int8"):
        choose("tflite", "student", (32, 128), [], [])


# --- the stage on the tiny pipeline ---------------------------------------------------------------------------


def test_deploy_stage_writes_a_fused_bundle_and_valid_repositories(built):
    params, _, m = built
    d = m["deploy"]["models"]["student"]
    bench = m["bench"]["results"]
    ran = {
        c["target"]: c["throughput_seq_per_s"] for c in d["choice"]["candidates"] if c["throughput_seq_per_s"]
    }
    assert d["target"] == max(ran, key=ran.get) and set(ran) == {
        "openvino-int8",
        "openvino-int8-dense",
        "onnxruntime-int8",
    }
    assert all(
        any(
            r["backend"] == c["backend"] and r["throughput_seq_per_s"] == c["throughput_seq_per_s"]
            for r in bench
        )
        for c in d["choice"]["candidates"]
        if c["throughput_seq_per_s"]
    )
    repos = m["deploy"]["repositories"]
    assert [r["name"] for r in repos["ovms"]] == ["student"] and repos["ovms"][0]["inputs"] == {
        "text": "<Type: 'string'>"
    }
    assert {r["name"] for r in repos["triton"]} == {"student", "student-gpu", "student-openvino"}
    assert d["bundle_size"]["gzip_bytes"] < d["bundle_size"]["bytes"]


def test_openvino_target_bundle_is_string_in_and_matches_the_token_in_ir(built, tmp_path):
    from pipeline.serving.runner import Bundle
    from pipeline import deploy

    params, path, _ = built
    p = copy.deepcopy(params)
    p["deploy"].update(
        target="openvino-int8", bundle_dir=str(tmp_path / "b"), out_dir=str(tmp_path / "s"), archive=True
    )
    (tmp_path / "params.yaml").write_text(json.dumps(p))
    shutil.copytree(Path(path).parent / "metrics", tmp_path / "metrics")
    got = deploy.main(str(tmp_path / "params.yaml"))["models"]["student"]
    gate = got["string_input"]["parity"]
    assert (
        got["string_input"]["fused"]
        and gate["passed"]
        and gate["rows"] == 48
        and gate["token_mismatch_rows"] == 0
    )
    b = Bundle(tmp_path / "b" / "student")
    assert b.manifest["engine"] == "openvino-text" and b.input_names == ["text"]
    assert not (tmp_path / "b" / "student" / "tokenizer.json").exists()
    assert got["latency_b1"]["fused"]["latency_ms_p50"] > 0
    with tarfile.open(tmp_path / "b" / got["archive"]["file"]) as tar:  # the archive is the bundle, whole
        tar.extractall(tmp_path / "device", filter="data")
    packed = sorted(f.name for f in (tmp_path / "device" / "student").iterdir())
    assert packed == sorted(f.name for f in (tmp_path / "b" / "student").iterdir())
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import runner; b = runner.Bundle(sys.argv[1]);"
        "assert b.predict(['fine', 'bad']); bad = [m for m in ('torch', 'transformers', 'tokenizers', 'pipeline')"
        " if m in sys.modules]; assert not bad, bad"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "device" / "student")],  # run from the unpacked archive
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr  # the string-in bundle needs openvino + openvino-tokenizers only


def test_parity_gate_catches_a_tokenizer_that_disagrees(built):
    from pipeline.serving.tokenizer import convert, fuse, parity
    from pipeline.deploy import dev_rows

    params, _, _ = built
    data, xml = Path(params["data"]["out_dir"]), Path(params["compile"]["out_dir"]) / "student" / "int8.xml"
    rows = dev_rows(data)
    tok, hf = convert(data / "tokenizer", False, 64)
    assert parity(tok, fuse(tok, xml), xml, hf, rows, 64, 1e-3)["passed"]
    bad = parity(tok, fuse(tok, xml), xml, hf, rows, 6, 1e-3)  # the reference truncates at 6, the graph at 64
    assert not bad["passed"] and bad["token_mismatch_rows"] > 0


# --- repositories ---------------------------------------------------------------------------------------------


@pytest.fixture
def serving(built, tmp_path):
    params, _, _ = built
    return Path(shutil.copytree(params["deploy"]["out_dir"], tmp_path / "serving"))


def test_ovms_loads_the_highest_version(serving):
    from pipeline.serving.repository import validate_ovms

    shutil.copytree(serving / "ovms/student/1", serving / "ovms/student/12")
    shutil.copytree(serving / "ovms/student/1", serving / "ovms/student/3")
    assert validate_ovms(serving / "ovms")[0]["version"] == 12


def test_ovms_plugin_config_that_does_not_apply_is_refused(serving):
    from pipeline.serving.repository import RepositoryError, validate_ovms

    cfg = json.loads((serving / "ovms/config.json").read_text())
    cfg["model_config_list"][0]["config"]["plugin_config"]["NO_SUCH_PROPERTY"] = "1"
    (serving / "ovms/config.json").write_text(json.dumps(cfg))
    with pytest.raises(RepositoryError, match="NO_SUCH_PROPERTY"):
        validate_ovms(serving / "ovms")


@pytest.mark.parametrize(
    "old,new,match",
    [
        ("TYPE_INT64", "TYPE_FP32", "do not match"),
        ('name: "student"', 'name: "other"', "folder"),
        ("dims: [-1]", "dims: [-1, 4]", "do not match"),
        ('backend: "onnxruntime"', 'backend: "openvino"', "needs"),
        ("dynamic_batching { }", "", "dynamic_batching"),
    ],
)
def test_triton_config_that_disagrees_with_the_model_is_refused(serving, old, new, match):
    from pipeline.serving.repository import RepositoryError, validate_triton

    pbtxt = serving / "triton/student/config.pbtxt"
    pbtxt.write_text(pbtxt.read_text().replace(old, new, 1))
    with pytest.raises(RepositoryError, match=match):
        validate_triton(serving / "triton")


def test_ovms_enum_read_back_must_match_exactly():
    from pipeline.serving.repository import _same_property

    assert _same_property("LATENCY", "PerformanceMode.LATENCY") and _same_property(
        "0.88", "0.8799999952316284"
    )
    assert not _same_property("THROUGHPUT", "CUMULATIVE_THROUGHPUT") and not _same_property("f16", "bf16")


def test_triton_config_parses_with_the_real_schema(serving):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    cfg = text_format.Parse((serving / "triton/student-gpu/config.pbtxt").read_text(), mc.ModelConfig())
    accel = cfg.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert cfg.dynamic_batching is not None and cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert accel.name == "tensorrt" and accel.parameters["precision_mode"] == "FP32"
    with pytest.raises(text_format.ParseError):
        text_format.Parse("max_batch_size: 8\nno_such_field: 1", mc.ModelConfig())


def test_pair_tasks_fuse_two_string_inputs_and_the_bundle_answers_pairs(built, tmp_path):
    """MRPC-style pairs: `text` and `text_pair` inputs; ids, type ids and logits as the token-in path."""
    import openvino as ov

    from pipeline.serving.bundle import write_bundle
    from pipeline.serving.runner import Bundle
    from pipeline.serving.tokenizer import convert, fuse, parity
    from pipeline.deploy import dev_rows

    params, _, _ = built
    data, xml = Path(params["data"]["out_dir"]), Path(params["compile"]["out_dir"]) / "student" / "int8.xml"
    texts = [t for t, _ in dev_rows(data)]
    rows = list(zip(texts, texts[1:] + texts[:1]))
    short, hf = convert(data / "tokenizer", True, 24)
    gate = parity(short, fuse(short, xml), xml, hf, rows, 24, 1e-3)
    # Truncated pairs of equal length: HF keeps one more token of the second text, openvino-tokenizers
    # of the first. The gate sees it (deploy then ships the token-in bundle and says why).
    assert not gate["passed"] and 0 < gate["token_mismatch_rows"] < len(rows)
    tok, hf = convert(data / "tokenizer", True, 64)  # the demo's pairs fit: no truncation
    fused = fuse(tok, xml)
    gate = parity(tok, fused, xml, hf, rows, 64, 1e-3)
    assert gate["passed"] and gate["token_mismatch_rows"] == 0, gate
    ov.save_model(fused, str(tmp_path / "model.xml"), compress_to_fp16=False)
    common = dict(
        labels=["negative", "positive"],
        problem_type="classification",
        max_length=64,
        runtime_config={"INFERENCE_PRECISION_HINT": "f32"},
        info={"model": "student", "pairs": True},
    )
    write_bundle(
        tmp_path / "text",
        "openvino-text",
        {"model.xml": tmp_path / "model.xml", "model.bin": tmp_path / "model.bin"},
        None,
        **common,
    )
    write_bundle(
        tmp_path / "tokens",
        "openvino",
        {"model.xml": xml, "model.bin": xml.with_suffix(".bin")},
        data / "tokenizer",
        **common,
    )
    a, b = Bundle(tmp_path / "text"), Bundle(tmp_path / "tokens")
    assert a.input_names == ["text", "text_pair"]
    firsts, seconds = [t for t, _ in rows[:10]], [p for _, p in rows[:10]]
    assert abs(a.logits(firsts, seconds) - b.logits(firsts, seconds)).max() < 1e-3
    with pytest.raises(ValueError, match="pairs"):
        a.logits(firsts)
