"""PyTorch -> ONNX with a parity gate: the export contract as data, a numeric check after every export.

The gate compares logits on real dev batches (several batch sizes, dynamic padding, so several
lengths) and the zero count of every weight: an export that drifts or densifies is rejected.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import torch

# The contract every exported model meets: input names, dynamic axes, output.
CONTRACT = {
    "inputs": {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "sequence"},
        "token_type_ids": {0: "batch", 1: "sequence"},
    },
    "outputs": {"logits": {0: "batch"}},
}
ONNX_FILE = "model.onnx"


class ParityError(RuntimeError):
    """An exported model does not match its PyTorch source."""


def export_torch(model, out_dir: Path, opset: int) -> Path:
    """torch.onnx.export (TorchScript path): a single self-contained file, fixed input order."""
    names = list(CONTRACT["inputs"])
    dummy = tuple(
        torch.ones(2, 8, dtype=torch.long) if n != "token_type_ids" else torch.zeros(2, 8, dtype=torch.long)
        for n in names
    )
    path = out_dir / ONNX_FILE
    torch.onnx.export(
        model.eval(),
        dummy,
        str(path),
        input_names=names,
        output_names=list(CONTRACT["outputs"]),
        dynamic_axes={**CONTRACT["inputs"], **CONTRACT["outputs"]},
        opset_version=opset,
        dynamo=False,
    )
    return path


def export_optimum(model, out_dir: Path, opset: int) -> Path:
    """optimum-onnx's exporter, from the loaded model (slimmed students cannot be reloaded by path)."""
    from optimum.exporters.onnx import onnx_export_from_model

    onnx_export_from_model(
        model.eval(), out_dir, opset=opset, task="text-classification", do_validation=False, monolith=True
    )
    return out_dir / ONNX_FILE


EXPORTERS = {"optimum": export_optimum, "torch": export_torch}


def export(model, out_dir: Path, exporter: str, opset: int) -> Path:
    if exporter not in EXPORTERS:
        raise KeyError(f"unknown exporter {exporter!r}; allowed: {', '.join(EXPORTERS)}")
    path = EXPORTERS[exporter](model, out_dir, opset)
    for extra in out_dir.iterdir():  # optimum also writes config/tokenizer files: keep only the graph
        if extra.name not in (ONNX_FILE, ONNX_FILE + "_data"):
            extra.unlink() if extra.is_file() else shutil.rmtree(extra)
    return path


def parity(model, path: Path, ds, batch_sizes, examples: int, threads: int = 1) -> dict:
    """Max |logits_torch - logits_onnx| per batch size over the first `examples` dev rows."""
    import onnxruntime as ort

    from pipeline.core.tokens import feeds

    opts = ort.SessionOptions()  # the CPU provider alone: parity is about the graph, not a deploy target
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    model.eval()
    out = {}
    for bs in batch_sizes:
        worst = 0.0
        for b in feeds(ds, bs, examples):
            with torch.no_grad():
                ref = model(**{k: torch.from_numpy(v) for k, v in b.items()}).logits.numpy()
            got = sess.run(["logits"], {k: v for k, v in b.items() if k in names})[0]
            worst = max(worst, float(np.abs(ref - got).max()))
        out[f"b{bs}"] = worst
    return out


def weight_zero_counts(model) -> Counter:
    """(sorted shape, zeros) for every float weight with 2+ dims; sorted because exporters transpose."""
    return Counter(
        (tuple(sorted(p.shape)), int((p == 0).sum()))
        for p in model.state_dict().values()
        if p.is_floating_point() and p.ndim >= 2
    )


def onnx_zero_counts(path: Path) -> Counter:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    counts = Counter()
    for init in graph.initializer:
        a = numpy_helper.to_array(init)
        if a.ndim >= 2 and np.issubdtype(a.dtype, np.floating):
            counts[(tuple(sorted(a.shape)), int((a == 0).sum()))] += 1
    return counts


def check_zeros(model, path: Path) -> dict:
    """Every PyTorch weight must appear in the ONNX graph with the same zero count."""
    want, got = weight_zero_counts(model), onnx_zero_counts(path)
    missing = want - got
    return {
        "weights": sum(want.values()),
        "zeros_torch": sum(z * n for (_, z), n in want.items()),
        "zeros_onnx": sum(z * n for (_, z), n in got.items()),
        "mismatched": len(missing),
        "ok": not missing,
    }


def gate(model, path: Path, ds, batch_sizes, examples: int, atol: float, threads: int = 1) -> dict:
    """Parity figures for metrics; raises ParityError when logits drift or zeros change."""
    diffs = parity(model, path, ds, batch_sizes, examples, threads)
    zeros = check_zeros(model, path)
    result = {
        "max_abs_diff": max(diffs.values()),
        "max_abs_diff_by_batch": diffs,
        "atol": atol,
        "zeros": zeros,
    }
    if result["max_abs_diff"] > atol:
        raise ParityError(f"{path}: max |logits diff| {result['max_abs_diff']:.3g} > export.atol {atol}")
    if not zeros["ok"]:
        raise ParityError(
            f"{path}: {zeros['mismatched']} weights lost or changed zeros "
            f"(torch {zeros['zeros_torch']}, onnx {zeros['zeros_onnx']})"
        )
    return result
