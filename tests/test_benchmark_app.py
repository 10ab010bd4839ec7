"""The benchmark_app cross-check fails soft: a missing or failing tool is an error in its row, never a
crash of bench. Stand-in executables, so no OpenVINO model is needed."""

import json

import pytest

from pipeline.bench import crosscheck
from pipeline.runtime.backends import ModelPaths
from pipeline.timing import harness

ARGS = ({"INFERENCE_PRECISION_HINT": "f32"}, 4, 16, 1, 1)  # config, batch, seq, threads, seconds


@pytest.fixture
def bindir(tmp_path, monkeypatch):
    """A folder standing in for the interpreter's: benchmark_app is looked up beside sys.executable."""
    monkeypatch.setattr(harness.sys, "executable", str(tmp_path / "python"))
    return tmp_path


def fake_tool(folder, script: str) -> None:
    exe = folder / "benchmark_app"
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(0o755)


def test_missing_benchmark_app_is_an_error_not_a_crash(bindir):
    ba = harness.benchmark_app(bindir / "int8.xml", *ARGS)
    assert (
        ba["error"]
        == f"benchmark_app not found at {bindir / 'benchmark_app'} (it comes with the openvino package)"
    )
    assert "-data_shape" in ba["command"] and "seq_per_s" not in ba


def test_failing_benchmark_app_keeps_its_last_words(bindir):
    fake_tool(bindir, "echo 'Throughput: pending'; echo '[ ERROR ] cannot read int8.xml' >&2; exit 3\n")
    ba = harness.benchmark_app(bindir / "int8.xml", *ARGS)
    assert ba["error"] == "benchmark_app exited 3 without a throughput: [ ERROR ] cannot read int8.xml"


def test_benchmark_app_throughput_counts_sequences(bindir):
    fake_tool(bindir, "echo 'Median:        2.50 ms'; echo 'Throughput:   400.00 FPS'\n")
    ba = harness.benchmark_app(bindir / "int8.xml", *ARGS)
    assert (ba["fps"], ba["seq_per_s"], ba["latency_ms_median"]) == (400.0, 1600.0, 2.5)


def test_bench_crosscheck_records_the_error_and_goes_on(bindir, capsys):
    (bindir / "compile_config.json").write_text(json.dumps(ARGS[0]))
    ours = {
        "model": "student",
        "backend": "ov-int8",
        "batch": 1,
        "seq_len": 16,
        "streams": 1,
        "throughput_seq_per_s": 500.0,
    }
    p = {"crosscheck_shapes": [[1, 16]], "crosscheck_seconds": 1}
    [row] = crosscheck([ours], p, 1, ModelPaths(bindir, bindir / "model.onnx", bindir))
    assert row["ours_seq_per_s"] == 500.0 and "ratio" not in row
    assert row["benchmark_app"]["error"].startswith("benchmark_app not found at")
    assert (
        "[bench] benchmark_app cross-check at b1 s16 failed: benchmark_app not found"
        in capsys.readouterr().err
    )
