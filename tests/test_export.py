"""Export and compile: torch, onnxruntime and OpenVINO agree; sparsity survives; gates and policies bite."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from pipeline import export
from pipeline.core.common import cpu_info
from pipeline.core.models import load_trained
from pipeline.core.tokens import Tokens, feeds
from pipeline.onnx_export.onnx import ParityError, gate
from pipeline.runtime import openvino as dov
from pipeline.runtime.ort import PROVIDERS, ProviderError, make_session


@pytest.fixture(scope="module")
def student(built):
    params, _, _ = built
    dev = Tokens(Path(params["data"]["out_dir"]) / "eval.safetensors")
    onnx_path = Path(params["export"]["out_dir"]) / "student" / "model.onnx"
    return (
        load_trained(params["prune"]["out_dir"]).eval(),
        onnx_path,
        dev,
        Path(params["compile"]["out_dir"]) / "student",
    )


def torch_logits(model, batches):
    import torch

    with torch.no_grad():
        return np.concatenate(
            [model(**{k: torch.from_numpy(v) for k, v in b.items()}).logits.numpy() for b in batches]
        )


def test_torch_ort_openvino_agree(student):
    model, onnx_path, dev, compiled_dir = student
    batches = feeds(dev, 8)
    ref = torch_logits(model, batches)
    sess, _ = make_session(onnx_path, ["cpu"])
    names = {i.name for i in sess.get_inputs()}
    ort = np.concatenate(
        [sess.run(["logits"], {k: v for k, v in b.items() if k in names})[0] for b in batches]
    )
    ov_fp32 = dov.logits(
        dov.compile_model(compiled_dir / "fp32.xml", {"INFERENCE_PRECISION_HINT": "f32"}), batches
    )
    assert np.abs(ort - ref).max() < 1e-4
    assert np.abs(ov_fp32 - ref).max() < 1e-4
    int8 = dov.logits(
        dov.compile_model(compiled_dir / "int8.xml", {"INFERENCE_PRECISION_HINT": "f32"}), batches
    )
    assert np.abs(int8 - ref).max() < 0.25 * np.abs(ref).max() + 0.05  # quantized, but the same model


def test_sparsity_survives_export_and_int8(student, built):
    model, onnx_path, _, compiled_dir = student
    m = built[2]
    assert m["export"]["models"]["student"]["zeros"]["ok"]
    import openvino as ov

    weights = dov.weight_constants(ov.Core().read_model(compiled_dir / "int8.xml"))
    encoder = [w for name, w in weights.items() if "/encoder/" in name]
    assert len(encoder) == 12 and all(w["zeros"] >= 0.8 - 0.005 for w in encoder), encoder
    ort_int8 = onnx.load(str(compiled_dir / "int8.onnx"))
    quantized = [
        numpy_helper.to_array(t) for t in ort_int8.graph.initializer if t.data_type == onnx.TensorProto.INT8
    ]
    # symmetric INT8 keeps every pruned zero at 0 (an asymmetric zero point would not)
    assert sum(int((a == 0).sum()) for a in quantized) >= m["prune"]["encoder_linear_params"] * 0.8 - 1


def test_gate_rejects_corrupted_models(student, tmp_path):
    model, onnx_path, dev, _ = student
    graph = onnx.load(str(onnx_path))
    tensors = {t.name: t for t in graph.graph.initializer}
    pruned = max(graph.graph.initializer, key=lambda t: np.mean(numpy_helper.to_array(t) == 0))
    head = tensors.get("classifier.weight")  # a scaled pruned matrix can move a tiny model's logits by < atol
    assert head is not None, f"no initializer named classifier.weight in {onnx_path}: {sorted(tensors)[:8]}"
    drift = numpy_helper.to_array(head) * 1.5
    fill = numpy_helper.to_array(pruned).copy()
    fill[fill == 0] = 1e-12  # numerically invisible, but the zeros are gone
    for name, target, arr, needle in (
        ("drift", head, drift, "max \\|logits diff\\|"),
        ("fill", pruned, fill, "lost or changed zeros"),
    ):
        original = numpy_helper.to_array(target).copy()
        target.CopyFrom(numpy_helper.from_array(arr, target.name))
        bad = tmp_path / f"{name}.onnx"
        onnx.save(graph, str(bad))
        target.CopyFrom(numpy_helper.from_array(original, target.name))
        with pytest.raises(ParityError, match=needle):
            gate(model, bad, dev, [4], 16, atol=1e-4)


def test_failed_gate_fails_stage_and_keeps_nothing(built, tmp_path, monkeypatch):
    params, _, _ = built
    import yaml

    p = yaml.safe_load(Path(built[1]).read_text())
    p["export"].update(atol=0.0, out_dir=str(tmp_path / "onnx"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParityError):
        export.main(str(tmp_path / "params.yaml"))
    assert not (tmp_path / "onnx").exists() and not list(tmp_path.glob(".onnx.tmp-*"))


def test_asking_for_cuda_without_it_is_a_clear_error(student):
    _, onnx_path, _, _ = student
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA")  # the GPU suite covers it there
    with pytest.raises(ProviderError, match="CUDAExecutionProvider.*allow_fallback"):
        make_session(onnx_path, ["cuda"])
    _, info = make_session(onnx_path, ["cuda"], allow_fallback=True)
    assert info["fallback"] and info["used"] == ["CPUExecutionProvider"]


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_compile_checks_providers_before_any_work(tmp_path, monkeypatch, provider):
    """onnxruntime without the provider asked for fails at the start of compile, naming the key and
    what is available, not after the OpenVINO work; allow_fallback lets it through."""
    import onnxruntime

    from pipeline import compile as compile_
    from tests.conftest import tiny_params, write_params

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(compile_, "compile_one", lambda *a: pytest.fail("compile work started"))
    params = tiny_params(tmp_path, tmp_path / "no-model")
    params["compile"]["ort_providers"] = [provider, "cpu"]
    with pytest.raises(
        ProviderError,
        match=rf"^compile\.ort_providers: .*\['{PROVIDERS[provider]}'\] not "
        r"available here \(available: \['CPUExecutionProvider'\]\)",
    ):
        compile_.main(str(write_params(tmp_path, params)))  # no ONNX exists: a later check would say so
    params["compile"]["allow_fallback"] = True
    with pytest.raises(FileNotFoundError, match="no ONNX"):  # past the provider check, to the next one
        compile_.main(str(write_params(tmp_path, params)))


def test_sparse_kernel_report_matches_hardware(built):
    c = built[2]["compile"]["models"]["student"]
    assert c["compile_config"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert "INFERENCE_NUM_THREADS" not in c["compile_config"]  # the device decides, not the build machine
    rate = float(c["compile_config"]["CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE"])
    import json

    report = json.loads((Path(built[0]["compile"]["out_dir"]) / "student" / "fc_report.json").read_text())
    encoder = [layer for layer in report["layers"] if "/encoder/" in layer["name"]]
    assert len(encoder) == 12 and all(layer["weight_zeros"] >= rate for layer in encoder), encoder
    if any(f.startswith("amx") for f in cpu_info()["isa"]):
        assert c["sparse_fc_layers"] == 12, c["fc_reasons"]  # hidden 128, FFN 256: every encoder FC qualifies
    else:
        assert c["sparse_fc_layers"] == 0 and "no AMX on this CPU" in c["fc_reasons"]
    teacher = built[2]["compile"]["models"]["teacher"]
    assert (
        teacher["sparse_fc_layers"] == 0
        and "CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE" not in teacher["compile_config"]
    )


def test_four_bit_embeddings_shrink_the_table_and_keep_the_logits(built, tmp_path):
    """compile.embedding_bits: 4: the INT8 IR's word-embedding table is stored in 4 bits (every other
    table and every MatMul as before), the IR is smaller by about half the table, and its dev logits
    stay those of the 8-bit IR within quantization noise."""
    import copy

    import openvino as ov

    from pipeline import compile as compile_
    from tests.conftest import write_params

    params, _, m = built
    p = copy.deepcopy(params)
    p["compile"].update(out_dir=str(tmp_path / "c"), models=["student"], embedding_bits=4)
    got = compile_.main(str(write_params(tmp_path, p)))["models"]["student"]
    eight = Path(params["compile"]["out_dir"]) / "student" / "int8.xml"
    four = tmp_path / "c" / "student" / "int8.xml"
    table = dov.word_embedding_gather(
        ov.Core().read_model(Path(params["compile"]["out_dir"]) / "student" / "fp32.xml")
    )
    rows, width = table[0].input_value(0).get_shape()
    u4 = [
        op
        for op in ov.Core().read_model(four).get_ordered_ops()
        if op.get_type_name() == "Constant" and str(op.get_element_type()) == "<Type: 'uint4_t'>"
    ]
    sizes = sorted(int(np.prod(op.get_output_shape(0))) for op in u4)
    assert width % 64 == 0 and sizes == [rows * width // 64, rows * width]  # the word table, its zero points
    saved = m["compile"]["models"]["student"]["sizes"]["ir_int8"]["bytes"] - got["sizes"]["ir_int8"]["bytes"]
    assert saved > 0.4 * rows * width  # int8 -> 4 bits: half a byte per value, less the group scales
    dev = Tokens(Path(params["data"]["out_dir"]) / "eval.safetensors")
    batches = feeds(dev, 8)
    ref, q4 = (
        dov.logits(dov.compile_model(x, {"INFERENCE_PRECISION_HINT": "f32"}), batches) for x in (eight, four)
    )
    assert np.abs(q4 - ref).max() < 0.25 * np.abs(ref).max() + 0.05
    assert (q4.argmax(-1) == ref.argmax(-1)).mean() >= 0.9
