"""onnxruntime sessions with a provider policy, and INT8 dynamic quantization of an ONNX model.

onnxruntime falls back to the CPU silently when a provider cannot load; here the providers a user
asks for must be the ones the session uses, unless they set allow_fallback. `onnxruntime` and
`onnxruntime-gpu` share one import package: install only one (see requirements/gpu.txt).
"""

from __future__ import annotations

from pathlib import Path

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


class ProviderError(RuntimeError):
    """The session would not run on the providers asked for."""


def provider_list(names: list[str], trt: dict | None = None) -> list:
    """Short names -> onnxruntime provider entries (TensorRT with its options from params)."""
    unknown = [n for n in names if n not in PROVIDERS]
    if unknown:
        raise KeyError(f"unknown provider(s) {unknown}; allowed: {', '.join(PROVIDERS)}")
    return [(PROVIDERS[n], trt or {}) if n == "tensorrt" else PROVIDERS[n] for n in names]


def check_available(names: list[str], *, allow_fallback: bool, key: str | None = None) -> list[str]:
    """This onnxruntime build's providers, after failing when one asked for (under params key `key`)
    is not among them: cheap (no session, no model), so a stage can call it before any other work."""
    import onnxruntime as ort

    provider_list(names)  # unknown short names fail here, with the allowed ones
    available = ort.get_available_providers()
    missing = [PROVIDERS[n] for n in names if PROVIDERS[n] not in available]
    if missing and not allow_fallback:
        where = f"{key}: " if key else ""
        raise ProviderError(
            f"{where}onnxruntime provider(s) {missing} not available here (available: {available}); "
            f"install onnxruntime-gpu (requirements/gpu.txt) on a GPU machine, or set "
            f"allow_fallback: true to run on what is available"
        )
    return available


def make_session(
    path: Path, names: list[str], *, allow_fallback: bool = False, threads: int = 1, trt: dict | None = None
):
    """A session on exactly the providers asked for; returns (session, info about what ran)."""
    import onnxruntime as ort

    available = check_available(names, allow_fallback=allow_fallback)
    wanted = [PROVIDERS[n] for n in names]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    # Several sessions in one process starve each other through spinning worker threads.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    accelerated = [w for w in wanted if w != "CPUExecutionProvider"]
    if accelerated and not allow_fallback:
        # Without this, nodes a GPU provider cannot take run on the CPU provider without a word.
        opts.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    entries = [e for e, w in zip(provider_list(names, trt), wanted) if w in available] or [
        "CPUExecutionProvider"
    ]
    sess = ort.InferenceSession(str(path), opts, providers=entries)
    used = sess.get_providers()
    lost = [w for w in wanted if w not in used]
    if lost and not allow_fallback:
        raise ProviderError(
            f"asked for {wanted} but the session runs on {used} ({lost} did not load); "
            f"set allow_fallback: true to accept that"
        )
    return sess, {
        "requested": wanted,
        "used": used,
        "fallback": bool(lost),
        "threads": threads,
        "spinning": False,
    }


def quantize_dynamic_int8(src: Path, dst: Path) -> Path:
    """Per-channel symmetric INT8 weights (zeros stay zeros), activations quantized at run time.

    Stale graph.value_info entries make quantize_dynamic fail on some exports ("Inferred shape and
    existing shape differ"), so they are cleared on a copy first."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    del model.graph.value_info[:]
    clean = dst.with_name(dst.stem + ".clean.onnx")
    onnx.save(model, str(clean))
    quantize_dynamic(str(clean), str(dst), weight_type=QuantType.QInt8, per_channel=True)
    clean.unlink()
    return dst
