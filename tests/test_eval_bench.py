"""Eval and bench on the tiny pipeline: every backend judged, every bench field present and sane."""
import pytest

from deploy.backends import BACKENDS as LOADERS
from pipeline.core.common import cpu_info
from pipeline.eval import drift_flags
from pipeline.core.schema import BACKENDS


def test_backend_names_match_the_schema():
    assert tuple(LOADERS) == BACKENDS


def test_eval_covers_every_model_and_backend(built):
    e = built[2]["eval"]
    assert {(r["model"], r["backend"]) for r in e["results"]} == {(m, b) for m in ("teacher", "student")
                                                                  for b in BACKENDS}
    for r in e["results"]:
        assert r["provider"] and r["threads"] == 1 and r["inference_precision"]
        if r["backend"] in ("ort-fp32", "ov-fp32"):   # same FP32 model, same metric
            assert r["delta_vs_torch"] == pytest.approx(0, abs=1e-9)
    bf16 = next(r for r in e["results"] if r["backend"] == "ov-bf16")
    has_bf16 = {"amx_bf16", "avx512_bf16"} & set(cpu_info()["isa"])
    assert bf16["inference_precision"] == ("bf16" if has_bf16 else "f32")   # read back, not assumed


def test_drift_is_flagged():
    rows = [{"model": "teacher", "backend": "torch-fp32", "score": 0.90},
            {"model": "teacher", "backend": "ov-int8", "score": 0.85},
            {"model": "student", "backend": "torch-fp32", "score": 0.88},
            {"model": "student", "backend": "ort-int8", "score": 0.875}]
    flags = drift_flags(rows, tolerance=0.02)
    assert len(flags) == 1 and "teacher on ov-int8" in flags[0]
    assert rows[1]["flagged"] and not rows[3]["flagged"]
    assert rows[3]["delta_vs_teacher"] == pytest.approx(-0.025)


def test_stability_flags_disagreeing_rounds():
    from pipeline.bench import stability

    assert not stability([[0.010, 0.011], [0.0105, 0.0104]])["unstable"]
    flagged = stability([[0.010, 0.010], [0.020, 0.021]])
    assert flagged["unstable"] and flagged["round_p50_ms"] == [10.0, 20.5]


def test_bench_rows_are_complete_and_sane(built):
    b = built[2]["bench"]
    p = built[0]["bench"]
    cells = {(r["model"], r["backend"], r["batch"], r["seq_len"], r["streams"]) for r in b["results"]}
    for backend in p["backends"]:
        for batch in p["batch_sizes"]:
            for seq in p["seq_lens"]:
                assert ("student", backend, batch, seq, 1) in cells
                assert (("student", backend, batch, seq, 2) in cells) == backend.startswith("ov-")
    assert {("teacher", "torch-fp32", bs, s, 1) for bs in (1, 4) for s in (8, 16)} <= cells   # baseline, same run
    for r in b["results"]:
        assert 0 < r["latency_ms_p50"] <= r["latency_ms_p90"] <= r["latency_ms_p99"]
        assert r["iterations"] >= 3 and r["throughput_seq_per_s"] > 0 and r["threads"] == 1
        if r["streams"] == 1:
            assert len(r["round_p50_ms"]) == 2 and isinstance(r["unstable"], bool)
        assert r["provider"] and r["precision"] and r["speedup_vs_baseline"] > 0
        if r["model"] == "teacher":
            assert r["speedup_vs_baseline"] == 1.0
    assert b["hardware"]["cpu"] and b["env"]["versions"]["openvino"]
    ov = [r for r in b["results"] if r["backend"] == "ov-int8" and r["streams"] == 1]
    assert all("sparse_fc_layers" in r for r in ov)
    [check] = b["crosscheck"]
    assert check["benchmark_app_seq_per_s"] > 0 and 0.2 < check["ratio"] < 5   # same IR, same shape, same order
