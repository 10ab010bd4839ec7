"""OpenVINO for CPUs: ONNX -> IR (FP32), NNCF INT8 that keeps zeros, the compile configuration,
and a report of which fully-connected layers really run the sparse-weight kernel and why not.

Facts this relies on (measured on the stack pinned in requirements/lock.txt): ov.save_model compresses to FP16 unless told
not to; an FP32 IR runs in bf16 on AMX CPUs unless INFERENCE_PRECISION_HINT says f32; the sparse
kernel needs INT8 FC layers, AMX, both weight dims multiples of 64 and a zero fraction >= the rate.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

SPARSE_RATE_KEY = "CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE"  # the python helper attribute is gone in 2026.4
_PASS_THROUGH = {"Convert", "Multiply", "Subtract", "Transpose", "Reshape", "FakeQuantize", "FakeConvert"}


def convert(onnx_path: Path):
    import openvino as ov

    return ov.convert_model(str(onnx_path))


def save(model, xml: Path) -> None:
    import openvino as ov

    ov.save_model(model, str(xml), compress_to_fp16=False)


def quantize_int8(model, batches: list[dict], subset_size: int):
    """NNCF post-training INT8 (symmetric per-channel weights keep 0 as 0), calibrated on train rows."""
    import nncf

    return nncf.quantize(
        model, nncf.Dataset(batches), model_type=nncf.ModelType.TRANSFORMER, subset_size=subset_size
    )


def _indexed_by_input_ids(gather, hops: int = 6) -> bool:
    """Whether a Gather's indices come from the input_ids Parameter (through a Convert, or a trimmed
    vocabulary's remap Gather)."""
    node = gather.input_value(1).get_node()
    for _ in range(hops):
        if node.get_type_name() == "Parameter":
            return "input_ids" in node.get_output_tensor(0).get_names()
        if node.get_input_size() == 0:
            return False
        node = node.input_value(1 if node.get_type_name() == "Gather" else 0).get_node()
    return False


def word_embedding_gather(model):
    """(the Gather reading the word-embedding table, every Gather of a Constant): the table is the float
    Constant indexed by input_ids (a trimmed vocabulary's remap table holds integers)."""
    gathers = [
        op
        for op in model.get_ordered_ops()
        if op.get_type_name() == "Gather" and op.input_value(0).get_node().get_type_name() == "Constant"
    ]
    words = [g for g in gathers if g.input_value(0).get_element_type().is_real() and _indexed_by_input_ids(g)]
    if len(words) != 1:
        raise ValueError(f"expected one word-embedding Gather indexed by input_ids, found {len(words)}")
    return words[0], gathers


def compress_embeddings(model, group_size: int = 64):
    """The word-embedding table in 4 bits (NNCF weight compression, asymmetric, one scale and zero point
    per `group_size` columns, or per row when the width is not a multiple): the table is most of an INT8
    MiniLM's bytes. Every MatMul and every other table is left for INT8 (quantize_int8 runs after)."""
    import nncf

    word, gathers = word_embedding_gather(model)
    width = int(word.input_value(0).get_shape()[1])
    return nncf.compress_weights(
        model,
        mode=nncf.CompressWeightsMode.INT4_ASYM,
        ratio=1.0,
        group_size=group_size if width % group_size == 0 else -1,
        all_layers=True,  # NNCF keeps embeddings in 8 bits unless told
        ignored_scope=nncf.IgnoredScope(
            types=["MatMul"], names=[g.get_friendly_name() for g in gathers if g is not word]
        ),
    )


def compile_config(sparsity: float, precision: str, margin: float, min_rate: float) -> dict:
    """CPU properties, stated explicitly; threads are left to whoever runs it (bench, eval, the device).

    `sparsity` is the least sparse pruned layer's zero fraction: OpenVINO compares each layer with
    the one rate, and a "90%" matrix holds 0.899997 zeros, so a rate of exactly 0.9 would leave
    most layers dense. The rate sits `margin` below it."""
    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
    if sparsity >= min_rate:
        config[SPARSE_RATE_KEY] = f"{max(sparsity - margin, 0.0):.4f}"
    return config


def weight_constants(model) -> dict[str, dict]:
    """MatMul name -> weight shape and zero fraction, found by walking up from its weight input
    through (de)quantization ops to the Constant."""
    out = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        node = op.input_value(1).get_node()
        while node.get_type_name() in _PASS_THROUGH:
            node = node.input_value(0).get_node()
        if node.get_type_name() == "Constant":
            data = node.get_data()
            out[op.get_friendly_name()] = {"shape": list(data.shape), "zeros": float(np.mean(data == 0))}
    return out


def fc_report(compiled, model, config: dict, has_amx: bool) -> dict:
    """Per fully-connected layer: the primitive that ran and, when it is not sparse, why."""
    rate = float(config.get(SPARSE_RATE_KEY, "1.0"))
    weights = weight_constants(model)
    layers, reasons = [], Counter()
    for node in compiled.get_runtime_model().get_ordered_ops():
        info = node.get_rt_info()
        if info["layerType"].astype(str) != "FullyConnected":
            continue
        prim = info["primitiveType"].astype(str)
        names = info["originalLayersNames"].astype(str).split(",")
        # Runtime names carry suffixes such as "/DequantizationMultiply": also try the parent name.
        w = next((weights[c] for n in names for c in (n, n.rsplit("/", 1)[0]) if c in weights), None)
        why = _why_dense(
            prim, info["runtimePrecision"].astype(str), w, rate, has_amx, SPARSE_RATE_KEY in config
        )
        reasons[why] += 1
        layers.append(
            {
                "name": names[0],
                "primitive": prim,
                "weight_shape": w and w["shape"],
                "weight_zeros": w and round(w["zeros"], 6),
                "status": why,
            }
        )
    return {
        "fc_layers": len(layers),
        "sparse_fc_layers": reasons["sparse kernel"],
        "reasons": dict(reasons),
        "primitives": dict(Counter(l["primitive"] for l in layers)),
        "layers": layers,
    }


def _why_dense(prim: str, precision: str, w, rate: float, has_amx: bool, enabled: bool) -> str:
    if "sparse" in prim:
        return "sparse kernel"
    if not enabled:
        return "sparse decompression off (model below compile.min_sparse_rate)"
    if not has_amx:
        return "no AMX on this CPU"
    if w and any(d % 64 for d in w["shape"]):
        return "weight dims not multiples of 64"
    if precision.lower() not in ("i8", "u8"):
        return f"not INT8 (runs {precision})"
    if w and w["zeros"] < rate:
        return "weight zeros below the rate"
    return "dense for another reason"


def compile_model(xml: Path, config: dict, device: str = "CPU"):
    import openvino as ov

    return ov.Core().compile_model(str(xml), device, config)


def logits(compiled, batches) -> np.ndarray:
    """Run a compiled model over batches of numpy feeds; only inputs the model has are fed."""
    names = {i.get_any_name() for i in compiled.inputs}
    return np.concatenate([compiled({k: v for k, v in b.items() if k in names})[0] for b in batches])


def actual_precision(compiled) -> str:
    """What the plugin will run non-quantized ops in ("f32", "bf16"), read back, not assumed."""
    value = compiled.get_property("INFERENCE_PRECISION_HINT")
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value)


def sparse_fc_count(compiled) -> int:
    """FC layers whose primitive is a sparse-weight kernel (e.g. brgemm_avx512_amx_sparse_I8)."""
    return sum(
        1
        for n in compiled.get_runtime_model().get_ordered_ops()
        if n.get_rt_info()["layerType"].astype(str) == "FullyConnected"
        and "sparse" in n.get_rt_info()["primitiveType"].astype(str)
    )
