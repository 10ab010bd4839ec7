"""Eval and bench on the tiny pipeline: every backend judged, every bench field present and sane."""

import numpy as np
import pytest

from pipeline.core.common import cpu_info
from pipeline.core.schema import BACKENDS
from pipeline.eval import drift_flags
from pipeline.runtime.backends import BACKENDS as LOADERS


def test_backend_names_match_the_schema():
    assert tuple(LOADERS) == BACKENDS


def test_eval_covers_every_model_and_backend(built):
    e = built[2]["eval"]
    assert {(r["model"], r["backend"]) for r in e["results"]} == {
        (m, b) for m in ("teacher", "student") for b in BACKENDS
    }
    for r in e["results"]:
        assert r["provider"] and r["threads"] == 1 and r["inference_precision"]
        if r["backend"] in ("ort-fp32", "ov-fp32"):  # same FP32 model, same metric
            assert r["delta_vs_torch"] == pytest.approx(0, abs=1e-9)
    bf16 = next(r for r in e["results"] if r["backend"] == "ov-bf16")
    has_bf16 = {"amx_bf16", "avx512_bf16"} & set(cpu_info()["isa"])
    assert bf16["inference_precision"] == ("bf16" if has_bf16 else "f32")  # read back, not assumed


def test_drift_is_flagged():
    rows = [
        {"model": "teacher", "backend": "torch-fp32", "score": 0.90},
        {"model": "teacher", "backend": "ov-int8", "score": 0.85},
        {"model": "student", "backend": "torch-fp32", "score": 0.88},
        {"model": "student", "backend": "ort-int8", "score": 0.875},
    ]
    flags = drift_flags(rows, tolerance=0.02)
    assert len(flags) == 1 and "teacher on ov-int8" in flags[0]
    assert rows[1]["flagged"] and not rows[3]["flagged"]
    assert rows[3]["delta_vs_teacher"] == pytest.approx(-0.025)


@pytest.fixture
def teacher_only(project):
    """data + a 1-epoch teacher; eval of the teacher on torch-fp32 and one stand-in backend."""
    from pipeline import data, teacher

    params, write = project
    params["teacher"]["epochs"] = 1
    params["eval"].update(models=["teacher"], backends=["torch-fp32", "ov-int8"], tolerance=0.0)
    data.main(write(params))
    teacher.main(write(params))
    return params, write


def stand_in(monkeypatch, perturb):
    """ov-int8 replaced by PyTorch FP32 whose logits pass through perturb(logits, batch_no): eval needs no
    compiled model, and the drift is whatever the test makes it."""
    import pipeline.runtime.backends as db

    def load(paths, threads, streams):
        runner = db.BACKENDS["torch-fp32"](paths, threads, streams)
        calls = iter(range(10**6))
        return db.Runner(lambda feed: perturb(runner.run(feed), next(calls)), dict(runner.info))

    monkeypatch.setitem(db.BACKENDS, "ov-int8", load)


def test_eval_passes_when_backends_agree_exactly(teacher_only, monkeypatch):
    from pipeline import eval as eval_

    params, write = teacher_only
    stand_in(monkeypatch, lambda logits, i: logits.copy())
    m = eval_.main(write(params))  # tolerance 0.0 and fail_on_drift: only an exact match passes
    assert m["flags"] == [] and [r["delta_vs_torch"] for r in m["results"]] == [0.0, 0.0]


@pytest.mark.parametrize("fail", [True, False])
def test_eval_fails_on_drift_past_tolerance(teacher_only, monkeypatch, fail):
    """A backend that predicts the wrong class for every dev example scores 0 on accuracy and F1: it drifts
    from torch-fp32 by minus the teacher's score, past any tolerance below that."""
    import json

    from pipeline import eval as eval_
    from pipeline.core.tokens import Tokens

    params, write = teacher_only
    gold = Tokens(params["data"]["out_dir"] + "/eval.safetensors").labels
    bs = params["eval"]["batch_size"]

    def all_wrong(logits, i):
        wrong = 1 - gold[i * bs : i * bs + len(logits)]
        return np.eye(2, dtype=np.float32)[wrong]

    stand_in(monkeypatch, all_wrong)
    teacher_score = json.loads(open("metrics/teacher.json").read())["score"]
    assert teacher_score > 0.1
    params["eval"].update(tolerance=round(teacher_score - 0.01, 6), fail_on_drift=fail)
    path = write(params)
    if fail:
        with pytest.raises(
            eval_.DriftError,
            match=rf"1 backend\(s\) drifted past eval.tolerance .*teacher on ov-int8: "
            rf"score 0.0000 differs from torch-fp32 by -{teacher_score:.4f}",
        ):
            eval_.main(path)
    else:
        eval_.main(path)
    saved = json.loads(open("metrics/details/eval.json").read())  # written before the stage fails
    ref, bad = saved["results"]
    assert ref["backend"] == "torch-fp32" and ref["score"] == pytest.approx(teacher_score, abs=1e-6)
    assert (bad["accuracy"], bad["f1"], bad["score"], bad["flagged"]) == (0.0, 0.0, 0.0, True)
    assert bad["delta_vs_torch"] == pytest.approx(-ref["score"], abs=1e-6) and len(saved["flags"]) == 1
    params["eval"]["tolerance"] = round(teacher_score + 0.01, 6)  # the same drift inside the tolerance passes
    assert eval_.main(write(params))["flags"] == []


def test_stability_flags_disagreeing_rounds():
    from pipeline.timing.harness import stability

    assert not stability([[0.010, 0.011], [0.0105, 0.0104]])["unstable"]
    flagged = stability([[0.010, 0.010], [0.020, 0.021]])
    assert flagged["unstable"] and flagged["round_p50_ms"] == [10.0, 20.5]


def test_a_settled_round_is_not_repeated_and_a_lone_wide_one_is_flagged():
    from pipeline.timing.harness import settled, stability

    tight, wide = [0.100, 0.101, 0.099, 0.100, 0.102], [0.100, 0.150, 0.080, 0.130, 0.100]
    assert settled(tight) and not settled(wide)  # IQR/median 0.01 vs 0.3, against UNSTABLE = 0.15
    assert stability([tight]) == {"round_p50_ms": [100.0], "rounds_run": 1, "unstable": False}
    assert stability([wide])["unstable"]  # bench.rounds = 1 leaves it unrepeated, and says so


def test_bench_rows_are_complete_and_sane(built):
    b = built[2]["bench"]
    p = built[0]["bench"]
    cells = {(r["model"], r["backend"], r["batch"], r["seq_len"], r["streams"]) for r in b["results"]}
    for backend in p["backends"]:
        for batch in p["batch_sizes"]:
            for seq in p["seq_lens"]:
                assert ("student", backend, batch, seq, 1) in cells
                assert (("student", backend, batch, seq, 2) in cells) == backend.startswith("ov-")
    assert {
        ("teacher", "torch-fp32", bs, s, 1) for bs in (1, 4) for s in (8, 16)
    } <= cells  # baseline, same run
    for r in b["results"]:
        assert 0 < r["latency_ms_p50"] <= r["latency_ms_p90"] <= r["latency_ms_p99"]
        assert r["iterations"] >= 3 and r["throughput_seq_per_s"] > 0 and r["threads"] == 1
        if r["streams"] == 1:
            assert len(r["round_p50_ms"]) == r["rounds_run"] in (1, 2) and isinstance(r["unstable"], bool)
            assert r["rounds_run"] == 2 or not r["unstable"]  # a lone round is one that settled
        assert r["provider"] and r["precision"] and r["speedup_vs_baseline"] > 0
        if r["model"] == "teacher":
            assert r["speedup_vs_baseline"] == 1.0
    assert b["hardware"]["cpu"] and b["env"]["versions"]["openvino"]
    ov = [r for r in b["results"] if r["backend"] == "ov-int8" and r["streams"] == 1]
    assert all("sparse_fc_layers" in r for r in ov)
    [check] = b["crosscheck"]
    assert (
        check["benchmark_app_seq_per_s"] > 0 and 0.2 < check["ratio"] < 5
    )  # same IR, same shape, same order
