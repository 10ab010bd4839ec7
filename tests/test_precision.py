"""`precision: bf16`: autocast in training steps where the CPU has bf16 kernels, a clear error elsewhere."""
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.training import loop
from pipeline.training.distill import layer_map
from pipeline.training.loop import PrecisionError, autocast
from pipeline.training.student import make_loss
from tests.test_distill import P, ragged, tiny_bert  # noqa: F401  (ragged is a fixture)


def test_fp32_is_no_autocast():
    with autocast("fp32", isa=[])():
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_bf16_without_bf16_kernels_names_the_key_and_the_flags():
    with pytest.raises(PrecisionError, match=r"precision: bf16 needs .*avx512_bf16.*has avx2"):
        autocast("bf16", isa=["avx2"])


def test_bf16_autocast_runs_matmuls_in_bf16():
    with autocast("bf16", isa=["avx2", "avx512_bf16"])():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_bf16_loss_is_fp32_and_close_to_the_fp32_loss(ragged):  # noqa: F811
    teacher, student = tiny_bert(0), tiny_bert(1)
    loss_fn = make_loss(teacher, P, False, layer_map(2, 2))
    idx = np.arange(12)
    ref, ref_parts = loss_fn(student, ragged.batch(idx), idx)
    with autocast("bf16", isa=["amx_bf16"])():
        low, low_parts = loss_fn(student, ragged.batch(idx), idx)
    assert low.dtype == torch.float32  # every term is reduced in fp32
    assert low.item() == pytest.approx(ref.item(), rel=0.05)
    assert low_parts.keys() == ref_parts.keys()


def test_teacher_refuses_bf16_before_any_work(project, monkeypatch):
    from pipeline import data, teacher

    params, write = project
    monkeypatch.setattr(loop, "cpu_info", lambda: {"cpu": "test CPU", "isa": ["avx2"]})
    params["teacher"]["precision"] = "bf16"
    data.main(write(params))
    with pytest.raises(PrecisionError, match="test CPU"):
        teacher.main(write(params))
    assert not Path(params["teacher"]["out_dir"]).exists() and not Path(params["teacher"]["checkpoint_dir"]).exists()


def test_prune_refuses_bf16_before_the_teacher_cache(trained, monkeypatch):
    from pipeline import prune
    from pipeline.training import teacher_cache

    params, write = trained
    monkeypatch.setattr(loop, "cpu_info", lambda: {"cpu": "test CPU", "isa": ["avx2"]})
    monkeypatch.setattr(teacher_cache, "maybe_build", lambda *a, **k: pytest.fail("cache built before the check"))
    params["prune"]["precision"] = "bf16"
    with pytest.raises(PrecisionError, match="precision: bf16"):
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
        assert s["samples_per_s"] == pytest.approx(params["prune"]["batch_size"] * 1000 / s["step_ms_p50"], rel=1e-3)
    assert r["speedup_vs_live"]["live"] == 1.0
    assert r["speedup_vs_live"]["cache"] == pytest.approx(
        r["setups"]["live"]["step_ms_p50"] / r["setups"]["cache"]["step_ms_p50"], rel=1e-2)
