"""String-in models: the HF tokenizer converted by openvino-tokenizers and fused in front of the IR,
with a parity gate, as the export stage gates ONNX against PyTorch.

The gate runs every given row twice: the converted tokenizer's ids, mask and type ids must equal the
HF tokenizer's (padded to the longest in the batch, truncated longest-first at max_length), and the
fused model's logits must match the token-in IR fed the HF ids within `atol`.
Build side only (it imports transformers); the edge needs openvino and openvino-tokenizers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.serving.runner import INPUTS as TOKEN_OUTPUTS, TEXT_INPUTS


class TokenizerConversionError(RuntimeError):
    """openvino-tokenizers cannot convert this tokenizer; the message says why."""


def convert(tokenizer_dir: Path, pairs: bool, max_length: int):
    """The tokenizer as an OpenVINO model with inputs named `text` (and `text_pair`)."""
    from openvino_tokenizers import convert_tokenizer
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    try:
        model = convert_tokenizer(
            hf, truncation=True, max_length=max_length, number_of_inputs=2 if pairs else 1
        )
    except Exception as e:  # the converter raises many types (NotImplementedError, OVTypeError, ...)
        raise TokenizerConversionError(
            f"openvino-tokenizers cannot convert {type(hf).__name__} from {tokenizer_dir}: {e}"
        ) from e
    for port, name in zip(model.inputs, TEXT_INPUTS):
        port.get_tensor().set_names({name})  # pair inputs come unnamed; a server addresses them by name
    return model, hf


def fuse(tokenizer_model, ir_xml: Path):
    """tokenizer -> IR on matching names. connect_models drops the tokenizer's state sinks (its
    truncation length lives in a variable), so they are put back or the CPU plugin refuses the graph."""
    import openvino as ov
    from openvino_tokenizers import connect_models

    model = ov.Core().read_model(str(ir_xml))
    try:
        fused = connect_models(tokenizer_model, model)
    except Exception as e:  # e.g. the IR's inputs are not named like the tokenizer's outputs
        raise TokenizerConversionError(f"cannot connect the converted tokenizer to {ir_xml}: {e}") from e
    if tokenizer_model.get_sinks() and not fused.get_sinks():
        fused.add_sinks(tokenizer_model.get_sinks())
    return fused


def _hf_batch(hf, texts, pairs, max_length: int) -> dict:
    enc = hf(texts, pairs, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    return {k: enc[k].astype(np.int64) for k in TOKEN_OUTPUTS if k in enc}


def _same_row(ours: dict, ref: dict, j: int) -> bool:
    """Row j's real tokens (ids, type ids) agree; padding width may differ between the two."""
    n = int(ref["attention_mask"][j].sum())
    if "attention_mask" not in ours or int(ours["attention_mask"][j].sum()) != n:
        return False
    return all(k in ours and np.array_equal(ours[k][j][:n], v[j][:n]) for k, v in ref.items())


def parity(
    tokenizer_model,
    fused,
    ir_xml: Path,
    hf,
    rows: list[tuple[str, str | None]],
    max_length: int,
    atol: float,
    batch_size: int = 32,
) -> dict:
    """Check the converted tokenizer and the fused model on `rows` (text, text_pair or None)."""
    import openvino as ov

    core, f32 = ov.Core(), {"INFERENCE_PRECISION_HINT": "f32"}
    tok, net, ir = (core.compile_model(m, "CPU", f32) for m in (tokenizer_model, fused, str(ir_xml)))
    ir_inputs = {p.get_any_name() for p in ir.inputs}
    token_mismatch, max_diff = 0, 0.0
    for i in range(0, len(rows), batch_size):
        texts = [t for t, _ in rows[i : i + batch_size]]
        pairs = [p for _, p in rows[i : i + batch_size]] if rows[0][1] is not None else None
        feed = {"text": np.array(texts, dtype=str)} | (
            {"text_pair": np.array(pairs, dtype=str)} if pairs else {}
        )
        ours = {k.get_any_name(): v for k, v in tok(feed).items()}
        ref = _hf_batch(hf, texts, pairs, max_length)
        token_mismatch += sum(not _same_row(ours, ref, j) for j in range(len(texts)))
        want = ir({k: v for k, v in ref.items() if k in ir_inputs})[0]
        max_diff = max(max_diff, float(np.abs(net(feed)[0] - want).max()))
    return {
        "rows": len(rows),
        "token_mismatch_rows": token_mismatch,
        "logits_max_abs_diff": max_diff,
        "atol": atol,
        "passed": token_mismatch == 0 and max_diff <= atol,
    }
