"""GPU training: only where torch sees CUDA (never in CPU CI). Not yet run on a GPU by kasp's authors."""
import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("no CUDA device on this machine", allow_module_level=True)

from pipeline import prune  # noqa: E402


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_prune_trains_on_cuda_in_mixed_precision(trained, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    params, write = trained
    params["prune"].update(device="cuda", precision=precision)
    m = prune.main(write(params))
    assert (m["train_device"], m["train_precision"], m["train_fallback"]) == ("cuda", precision, None)
    assert abs(m["achieved_sparsity"] - params["prune"]["target_sparsity"]) <= params["prune"]["tolerance"]
