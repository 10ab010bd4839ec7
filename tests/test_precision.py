"""Device and precision (pipeline.training.device): what runs is decided before any model loads, a
missing CUDA or bf16 is a clear error unless allow_fallback, and Accelerate's autocast does the bf16."""

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.training import device
from pipeline.training.device import PrecisionError, resolve
from pipeline.training.distill import layer_map
from pipeline.training.student import make_loss
from tests.test_distill import P, ragged, tiny_bert  # noqa: F401  (ragged is a fixture)

BF16_CPU, AVX2 = ["avx2", "avx512_bf16"], ["avx2"]


def ask(dev="cpu", prec="fp32", fallback=False) -> dict:
    return {"device": dev, "precision": prec, "allow_fallback": fallback}


def test_what_was_asked_runs_where_the_machine_has_it():
    assert resolve(ask("auto", "bf16"), isa=BF16_CPU, cuda=False) == device.Placement(
        "cpu", "bf16", "auto/bf16", None
    )
    assert resolve(ask("auto", "fp32"), isa=AVX2, cuda=True).device == "cuda"
    assert resolve(ask("cpu", "fp32"), isa=AVX2, cuda=True).device == "cpu"


@pytest.mark.parametrize(
    "dev, prec, isa, match",
    [
        ("cuda", "fp32", AVX2, r"device: cuda.*no CUDA device.*set device: cpu"),
        ("cpu", "bf16", AVX2, r"precision: bf16.*avx512_bf16.*has avx2.*set precision: fp32"),
        ("cpu", "fp16", BF16_CPU, r"fp16 mixed precision is a GPU feature"),
        ("auto", "fp16", BF16_CPU, r"device: auto, precision: fp16"),
    ],
)
def test_a_missing_device_or_precision_fails_naming_the_key(dev, prec, isa, match):
    with pytest.raises(PrecisionError, match=match):
        resolve(ask(dev, prec), isa=isa, cuda=False)


def test_fallback_runs_what_the_machine_has_and_says_why():
    got = resolve(ask("cuda", "bf16", fallback=True), isa=AVX2, cuda=False)
    assert (got.device, got.precision, got.asked) == ("cpu", "fp32", "cuda/bf16")
    assert "no CUDA device" in got.fallback and "avx512_bf16" in got.fallback
    assert got.record() == {
        "train_device": "cpu",
        "train_precision": "fp32",
        "train_asked": "cuda/bf16",
        "train_fallback": got.fallback,
    }
    kept = resolve(ask("cuda", "bf16", fallback=True), isa=BF16_CPU, cuda=False)
    assert (kept.device, kept.precision) == ("cpu", "bf16") and "avx512_bf16" not in kept.fallback


def test_fp32_accelerator_does_not_autocast():
    acc = device.accelerator(resolve(ask(), isa=AVX2, cuda=False))
    with acc.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_bf16_accelerator_runs_matmuls_in_bf16_and_a_later_one_can_be_fp32():
    with device.accelerator(device.Placement("cpu", "bf16", "cpu/bf16", None)).autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with device.accelerator(device.Placement("cpu", "fp32", "cpu/fp32", None)).autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_a_later_stage_in_the_same_process_gets_its_own_device():
    """An earlier stage's single-process state must not pin the next one's device (it did on a GPU
    machine: a CPU stage, then `device: cuda`, ended on the CPU). The earlier device is faked as `meta`."""
    from accelerate.state import PartialState

    device.accelerator(device.Placement("cpu", "fp32", "cpu/fp32", None))
    PartialState._shared_state["device"] = torch.device("meta")
    assert device.accelerator(device.Placement("cpu", "fp32", "cpu/fp32", None)).device.type == "cpu"


def test_bf16_loss_is_fp32_and_close_to_the_fp32_loss(ragged):  # noqa: F811
    teacher, student = tiny_bert(0), tiny_bert(1)
    loss_fn = make_loss(teacher, P, False, layer_map(2, 2))
    idx = np.arange(12)
    ref, ref_parts = loss_fn(student, ragged.batch(idx), idx)
    with device.accelerator(device.Placement("cpu", "bf16", "cpu/bf16", None)).autocast():
        low, low_parts = loss_fn(student, ragged.batch(idx), idx)
    assert low.dtype == torch.float32  # every term is reduced in fp32
    assert low.item() == pytest.approx(ref.item(), rel=0.05)
    assert low_parts.keys() == ref_parts.keys()


def test_teacher_refuses_bf16_before_any_work(project, monkeypatch):
    from pipeline import data, teacher

    params, write = project
    monkeypatch.setattr(device, "cpu_info", lambda: {"cpu": "test CPU", "isa": ["avx2"]})
    params["teacher"]["precision"] = "bf16"
    data.main(write(params))
    with pytest.raises(PrecisionError, match="test CPU"):
        teacher.main(write(params))
    assert (
        not Path(params["teacher"]["out_dir"]).exists()
        and not Path(params["teacher"]["checkpoint_dir"]).exists()
    )


def test_prune_refuses_cuda_before_the_teacher_cache(trained, monkeypatch):
    from pipeline import prune
    from pipeline.training import teacher_cache

    params, write = trained
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(
        teacher_cache, "maybe_build", lambda *a, **k: pytest.fail("cache built before the check")
    )
    params["prune"]["device"] = "cuda"
    with pytest.raises(PrecisionError, match="device: cuda"):
        prune.main(write(params))


def test_step_profile_times_every_setup_on_the_same_batches(trained, tmp_path):
    from pipeline.core.common import read_json
    from pipeline.training import step_profile

    params, write = trained
    out = tmp_path / "profile.json"
    r = step_profile.main([write(params), "--steps", "3", "--warmup", "1", "--out", str(out)])
    assert read_json(out) == r
    assert {"live", "cache"} <= r["setups"].keys()
    assert ("cache+bf16" in r["setups"]) == (r["bf16"] == "measured")
    for s in r["setups"].values():
        assert s["timed_steps"] == 3 and s["step_ms_p50"] > 0
        assert s["samples_per_s"] == pytest.approx(
            params["prune"]["batch_size"] * 1000 / s["step_ms_p50"], rel=1e-3
        )
    assert r["speedup_vs_live"]["live"] == 1.0
    assert r["speedup_vs_live"]["cache"] == pytest.approx(
        r["setups"]["live"]["step_ms_p50"] / r["setups"]["cache"]["step_ms_p50"], rel=1e-2
    )
