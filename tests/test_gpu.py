"""GPU backends: run only where onnxruntime sees CUDA (never in CPU CI)."""

import pytest

ort = pytest.importorskip("onnxruntime")
if "CUDAExecutionProvider" not in ort.get_available_providers():
    pytest.skip("no CUDA execution provider on this machine", allow_module_level=True)

import numpy as np  # noqa: E402

from pipeline.core.tokens import Tokens, feeds  # noqa: E402
from pipeline.runtime.ort import make_session  # noqa: E402


def test_cuda_session_runs_on_cuda_and_matches_cpu(built):
    params = built[0]
    onnx_path = f"{params['export']['out_dir']}/student/model.onnx"
    dev = Tokens(f"{params['data']['out_dir']}/eval.safetensors")
    b = feeds(dev, 8)[0]
    cuda, info = make_session(onnx_path, ["cuda"])
    assert info["used"][0] == "CUDAExecutionProvider" and not info["fallback"]
    cpu, _ = make_session(onnx_path, ["cpu"])
    names = {i.name for i in cpu.get_inputs()}
    feed = {k: v for k, v in b.items() if k in names}
    assert np.abs(cuda.run(["logits"], feed)[0] - cpu.run(["logits"], feed)[0]).max() < 1e-3
