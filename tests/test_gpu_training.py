"""GPU training: only where torch sees CUDA (never in CPU CI). Passed on an H200 (2026-12-04, tools/gpu)."""

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("no CUDA device on this machine", allow_module_level=True)

from pipeline import prune  # noqa: E402


def test_prune_trains_on_cuda_in_bf16(trained):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    params, write = trained
    params["prune"].update(device="cuda", precision="bf16", pruning_type="movement")
    m = prune.main(write(params))
    assert (m["train_device"], m["train_precision"], m["train_fallback"]) == ("cuda", "bf16", None)
    assert abs(m["achieved_sparsity"] - params["prune"]["target_sparsity"]) <= params["prune"]["tolerance"]


def test_teacher_trains_on_cuda_in_fp16(project):
    from pipeline import data, teacher

    params, write = project
    params["teacher"].update(device="cuda", precision="fp16", epochs=1)
    data.main(write(params))
    m = teacher.main(write(params))
    assert (m["train_device"], m["train_precision"]) == ("cuda", "fp16")
