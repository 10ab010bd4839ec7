"""The report stage and tools.diagnostics.compare, from hand-written metrics files (no models, no runtimes)."""

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline import report
from pipeline.report import ReportInputError
from pipeline.reporting.render import NA, table_rows
from tools.diagnostics import compare

FIXTURES = Path(__file__).parent / "fixtures" / "metrics" / "details"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LAT, TPUT = [1, 32], [32, 128]


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def tput(bench: dict, model: str, backend: str, shape) -> float:
    (row,) = [
        r
        for r in bench["results"]
        if (r["model"], r["backend"], r["batch"], r["seq_len"]) == (model, backend, *shape)
        and r["streams"] == 1
    ]
    return row["throughput_seq_per_s"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A cwd holding metrics/ copies and a params.yaml with only the report section."""
    shutil.copytree(FIXTURES, tmp_path / "metrics" / "details")
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump({"report": {"out_dir": "reports", "latency_shape": LAT, "throughput_shape": TPUT}})
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path, str(params)


def table_line(text: str, model: str, backend: str) -> str:
    (line,) = [l for l in text.splitlines() if l.startswith(f"| {model} | {backend} |")]
    return line


def test_report_renders_from_fixture_metrics(workdir, capsys):
    root, params = workdir
    metrics = report.main(params)
    bench = fixture("bench")
    speedup = tput(bench, "student", "ov-int8", TPUT) / tput(bench, "teacher", "torch-fp32", TPUT)
    speedup_lat = tput(bench, "student", "ov-int8", LAT) / tput(bench, "teacher", "torch-fp32", LAT)
    on_off = tput(bench, "student", "ov-int8", TPUT) / tput(bench, "student", "ov-int8-dense", TPUT)

    md = (root / "reports" / "report.md").read_text()
    line = table_line(md, "student", "ov-int8")
    assert f"| {speedup:.2f}x | {speedup_lat:.2f}x |" in line
    assert f"| {tput(bench, 'student', 'ov-int8', TPUT):.1f} |" in line
    assert "FLAGGED BACKENDS" in md and fixture("eval")["flags"][0] in md
    assert "| student | ort-int8 **FLAGGED** |" in md
    assert "student: 36/38 FC layers on the sparse INT8 kernel; others: weight zeros below the rate: 1" in md
    shipped = fixture("deploy")["models"]["student"]
    assert f"- **student**: `{shipped['target']}` (auto: fastest within eval's tolerance" in md
    assert all(f"`{c['target']}` ({c['backend']})" in md for c in shipped["choice"]["candidates"])
    assert "**GAP > 15%**: student ov-int8 b32×s128" in md
    assert "python -m tools.diagnostics.compare" in md
    assert "always answering the majority class scores 0.6123" in md  # the baseline beside the scores
    assert "- Selection: teacher last, student n/a" in md  # the fixture's prune.json predates selection
    assert table_line(capsys.readouterr().out, "student", "ov-int8") == line

    assert metrics["rows"] == len(fixture("eval")["results"])
    assert metrics["student_ov_int8_speedup_x"] == round(speedup, 4)
    assert metrics["student_ov_int8_speedup_x_latency_shape"] == round(speedup_lat, 4)
    assert metrics["sparse_on_off_x"] == round(on_off, 4)
    assert metrics["flagged_backends"] == 1 and metrics["crosscheck_gaps_over_15pct"] == 1
    assert json.loads((root / "metrics" / "details" / "report.json").read_text())["rows"] == metrics["rows"]

    for png in ("accuracy_vs_throughput.png", "throughput.png"):
        assert (root / "reports" / png).read_bytes()[:8] == PNG_MAGIC
    acc = json.loads((root / "reports" / "plots" / "accuracy_vs_throughput.json").read_text())
    grid = json.loads((root / "reports" / "plots" / "throughput.json").read_text())
    assert len(acc) == metrics["rows"] and len(grid) == len(bench["results"])
    assert all({"label", "model", "backend", "score", "throughput_seq_per_s"} <= set(r) for r in acc)
    assert all(
        {"label", "model", "backend", "batch", "seq_len", "throughput_seq_per_s"} <= set(r) for r in grid
    )
    assert len({r["label"] for r in grid}) == len(grid)  # DVC bar plots key on the label
    assert not list(root.glob(".reports.tmp-*"))


def test_report_names_a_calibrated_threshold(workdir):
    root, params = workdir
    prune = fixture("prune")
    prune["calibration"] = {"split": "train_split", "split_size": 367, "logit_shift": 0.8125}
    (root / "metrics" / "details" / "prune.json").write_text(json.dumps(prune))
    report.main(params)
    md = (root / "reports" / "report.md").read_text()
    assert "the student's positive logit was shifted by -0.812, fitted on 367 held-out train rows" in md


def test_missing_metrics_file_names_it_and_its_stage(workdir):
    root, params = workdir
    (root / "metrics" / "details" / "bench.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"metrics/details/bench\.json \(written by stage `bench`"):
        report.main(params)
    assert not (root / "reports").exists()


def test_malformed_row_names_file_and_key(workdir):
    root, params = workdir
    bench = fixture("bench")
    del bench["results"][3]["throughput_seq_per_s"]
    (root / "metrics" / "details" / "bench.json").write_text(json.dumps(bench))
    with pytest.raises(
        ReportInputError, match=r"bench\.json: results\[3\] lacks key\(s\) \['throughput_seq_per_s'\]"
    ):
        report.main(params)


def test_missing_bench_cell_is_na_not_invented():
    bench = fixture("bench")
    bench["results"] = [
        r
        for r in bench["results"]
        if not (r["model"], r["backend"], r["batch"], r["seq_len"]) == ("teacher", "ort-int8", *LAT)
    ]
    rows = table_rows(
        fixture("teacher"), fixture("prune"), fixture("compile"), fixture("eval"), bench, LAT, TPUT
    )
    (row,) = [r for r in rows if (r["model"], r["backend"]) == ("teacher", "ort-int8")]
    assert row["latency_ms_p50"] == NA and row["speedup_x_latency_shape"] == NA
    assert row["throughput_seq_per_s"] == tput(bench, "teacher", "ort-int8", TPUT)


def write(tmp_path: Path, name: str, doc: dict) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def test_compare_two_bench_files_gives_ratio(tmp_path, capsys):
    a = fixture("bench")
    b = copy.deepcopy(a)
    row = next(
        r
        for r in b["results"]
        if (r["model"], r["backend"], r["batch"], r["seq_len"]) == ("student", "ov-int8", *TPUT)
    )
    row["throughput_seq_per_s"] = round(row["throughput_seq_per_s"] * 1.37, 2)
    out = tmp_path / "cmp.md"
    paths = [write(tmp_path, "a.json", a), write(tmp_path, "b.json", b)]
    assert compare.main(paths + ["--out", str(out), "--strict"]) == 0
    text = capsys.readouterr().out
    expected = row["throughput_seq_per_s"] / tput(a, "student", "ov-int8", TPUT)
    assert table_line(text, "student", "ov-int8 | 32 | 128").endswith(f"| {expected:.2f}x |")
    assert "not comparable" not in text and "- none: every pair was compared like for like" in text
    assert out.read_text().strip() == text.strip()


def test_compare_flags_precision_shape_and_threads(tmp_path, capsys):
    a = fixture("bench")
    b = copy.deepcopy(a)
    key = lambda r: (r["model"], r["backend"], r["batch"], r["seq_len"])  # noqa: E731
    by_key = {key(r): r for r in b["results"]}
    by_key[("student", "ort-int8", 1, 32)]["precision"] = "fp32"
    by_key[("teacher", "torch-fp32", 32, 128)]["threads"] = 4
    b["results"].remove(by_key[("student", "ov-int8", 32, 128)])
    paths = [write(tmp_path, "a.json", a), write(tmp_path, "b.json", b)]

    assert compare.main(paths + ["--strict"]) == 1
    text = capsys.readouterr().out
    assert table_line(text, "student", "ort-int8 | 1 | 32").endswith(
        "| not comparable: precision int8 vs fp32 |"
    )
    assert table_line(text, "teacher", "torch-fp32 | 32 | 128").endswith("| not comparable: threads 8 vs 4 |")
    assert table_line(text, "student", "ov-int8 | 32 | 128").endswith(
        "| — | — | not comparable: missing in B |"
    )
    assert text.count("not comparable") == 3
    assert compare.main(paths) == 0  # without --strict the flags are shown, not fatal
    capsys.readouterr()


def test_compare_flags_hardware_and_relevant_versions(tmp_path):
    a = fixture("bench")
    b = copy.deepcopy(a)
    b["env"]["versions"]["openvino"] = "2099.1.0"
    fa, fb = (compare.load(write(tmp_path, n, d)) for n, d in (("a.json", a), ("b.json", b)))
    ov, torch_ = ("student", "ov-int8", 1, 32, 1), ("student", "torch-fp32", 1, 32, 1)
    # a newer OpenVINO voids the OpenVINO rows' ratios, not the PyTorch ones (still listed under Flags)
    assert compare.flags_for(fa, fb, fa["rows"][ov], fb["rows"][ov]) == [
        f"openvino {a['env']['versions']['openvino']} vs 2099.1.0"
    ]
    assert compare.flags_for(fa, fb, fa["rows"][torch_], fb["rows"][torch_]) == []

    b["hardware"]["physical_cores"] = 4
    fb = compare.load(write(tmp_path, "b.json", b))
    assert "physical_cores 8 vs 4" in compare.flags_for(fa, fb, fa["rows"][torch_], fb["rows"][torch_])
    text, flags = compare.render([fa, fb], compare.align([fa, fb]))
    assert "B vs A: physical_cores 8 vs 4" in flags and "x |" not in text  # no ratio anywhere


def test_compare_refuses_bench_and_eval_mix(capsys):
    paths = [str(FIXTURES / "bench.json"), str(FIXTURES / "eval.json")]
    with pytest.raises(compare.CompareError, match="bench and eval"):
        compare.align([compare.load(p) for p in paths])
    with pytest.raises(SystemExit) as e:
        compare.main(paths)
    assert e.value.code == 2 and "eval.json is eval" in capsys.readouterr().err


def test_compare_eval_files_gives_score_difference(tmp_path, capsys):
    a = fixture("eval")
    b = copy.deepcopy(a)
    b["results"][0]["score"] = a["results"][0]["score"] - 0.0125
    assert compare.main([write(tmp_path, "a.json", a), write(tmp_path, "b.json", b), "--strict"]) == 0
    assert table_line(capsys.readouterr().out, "teacher", "torch-fp32").endswith("| -0.0125 |")


def test_unstable_bench_cells_are_called_out(workdir):
    root, params = workdir
    bench = fixture("bench")
    bench["results"][0].update(unstable=True, round_p50_ms=[10.0, 20.0])
    (root / "metrics" / "details" / "bench.json").write_text(json.dumps(bench))
    m = report.main(params)
    md = (root / "reports" / "report.md").read_text()
    assert m["unstable_bench_cells"] == 1 and "## Unstable timings" in md and "10.00, 20.00 ms" in md


def test_table_shows_what_ran_and_marks_what_differs_from_the_ask(workdir):
    """An AMD EPYC without bf16: ov-bf16 asked bf16 and OpenVINO ran f32; onnxruntime asked CUDA and,
    with allow_fallback, ran on the CPU; one bench cell ran otherwise than eval did."""
    root, params = workdir
    ev, bench, comp = fixture("eval"), fixture("bench"), fixture("compile")
    ev["results"].append(
        {**ev["results"][-1], "backend": "ov-bf16", "precision": "bf16", "inference_precision": "f32"}
    )
    bench["hardware"].update(cpu="AMD EPYC 7763", isa=["avx2", "avx512f"])
    comp["models"]["student"]["ort_sessions"]["int8"]["requested"] = [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    cell = next(
        r for r in bench["results"] if (r["model"], r["backend"], r["batch"]) == ("student", "ov-int8", 1)
    )
    cell["inference_precision"] = "bf16"
    for name, doc in (("eval", ev), ("bench", bench), ("compile", comp)):
        (root / "metrics" / "details" / f"{name}.json").write_text(json.dumps(doc))
    m = report.main(params)
    md = (root / "reports" / "report.md").read_text()
    assert table_line(md, "student", "ov-bf16").startswith(
        "| student | ov-bf16 | fp32 | CPU | **bf16 asked, fp32 ran: this CPU has no bf16"
    )
    assert table_line(md, "student", "ort-int8 **FLAGGED**").startswith(
        "| student | ort-int8 **FLAGGED** | int8-dynamic | CPUExecutionProvider | **CUDAExecutionProvider,"
        "CPUExecutionProvider asked, CPUExecutionProvider ran: CUDAExecutionProvider did not load"
    )
    assert (
        f"**bench ran int8 + bf16 on CPU at b1×s{cell['seq_len']}, eval int8 + fp32 on CPU**"
        in table_line(md, "student", "ov-int8")
    )
    assert table_line(md, "teacher", "ov-int8").startswith(
        "| teacher | ov-int8 | int8 + fp32 | CPU | as asked |"
    )
    assert m["rows_not_as_asked"] == 3


def test_failed_benchmark_app_is_shown_not_fatal(workdir):
    root, params = workdir
    bench = fixture("bench")
    ok, gap = bench["crosscheck"]
    for k in ("benchmark_app_seq_per_s", "ratio", "gap_over_15pct"):
        del gap[k]
    gap["benchmark_app"] = {
        "error": "benchmark_app not found at /venv/bin/benchmark_app",
        "command": "-m int8.xml",
    }
    ok.update(benchmark_app={"error": ["[ ERROR ] bad IR"]}, ratio=None)  # older files kept a list of lines
    del ok["ratio"]
    (root / "metrics" / "details" / "bench.json").write_text(json.dumps(bench))
    m = report.main(params)
    md = (root / "reports" / "report.md").read_text()
    assert (
        "- **benchmark_app FAILED**: student ov-int8 b32×s128: ours 1777.8 seq/s; this cell is not "
        "cross-checked: benchmark_app not found at /venv/bin/benchmark_app"
    ) in md
    assert "b1×s32: ours 1250.0 seq/s; this cell is not cross-checked: [ ERROR ] bad IR" in md
    assert m["crosscheck_failed"] == 2 and m["crosscheck_gaps_over_15pct"] == 0


def test_labels_of_nearly_coincident_points_do_not_overlap():
    from itertools import combinations

    from matplotlib.text import Text

    from pipeline.reporting.render import TPUT as T, _pyplot, accuracy_figure

    backends = ("ov-int8", "torch-fp32", "ov-fp32", "ort-fp32", "ort-int8")
    rows = [
        {"model": "student", "backend": b, "score": 0.9018 + i * 1e-5, T: 85.0 + i * 0.4}
        for i, b in enumerate(backends)
    ]
    rows.append({"model": "teacher", "backend": "ov-int8", "score": 0.95, T: 400.0})  # sets a wide scale
    fig = accuracy_figure(rows, TPUT)
    fig.canvas.draw()  # lays the figure out as savefig does
    renderer = fig.canvas.get_renderer()
    labels = fig.axes[0].texts
    assert sorted(t.get_text() for t in labels) == sorted(r["backend"] for r in rows)
    boxes = [Text.get_window_extent(t, renderer) for t in labels]  # the text alone, not its leader line
    assert not [(a, b) for a, b in combinations(boxes, 2) if a.overlaps(b)]
    _pyplot().close(fig)


def test_unrecorded_precision_is_said_not_assumed():
    from pipeline.reporting.ran import what_ran

    row = {"model": "student", "backend": "ov-bf16", "precision": "bf16", "provider": "openvino-CPU"}
    ran = what_ran(row, [], fixture("compile")["models"]["student"], ["amx_bf16"])
    assert ran["precision_ran"] is None
    assert ran["asked_vs_ran"] == ["bf16 asked; what ran is not recorded (rerun eval and bench)"]


def test_compare_reads_the_details_beside_a_headline_file(tmp_path):
    """`python -m tools.diagnostics.compare A/metrics/bench.json B/metrics/bench.json` as the README says: the rows
    live in metrics/details/bench.json, and the headline file names it."""
    (tmp_path / "metrics" / "details").mkdir(parents=True)
    shutil.copy(FIXTURES / "bench.json", tmp_path / "metrics" / "details" / "bench.json")
    (tmp_path / "metrics" / "bench.json").write_text(json.dumps({"unstable_cells": 0, "wall_time_s": 1.0}))
    f = compare.load(tmp_path / "metrics" / "bench.json")
    assert f["kind"] == "bench" and f["path"].endswith("details/bench.json")
    assert len(f["rows"]) == len(fixture("bench")["results"])


def test_the_report_leads_with_the_student_against_its_teacher_on_the_same_runtime():
    from pipeline.reporting.render_gain import headline, render_gain

    def row(model, backend, tput, p50, gz, score, vs_torch):
        return {
            "model": model,
            "backend": backend,
            "throughput_seq_per_s": tput,
            "latency_ms_p50": p50,
            "size_gzip_mb": gz,
            "score": score,
            "speedup_x": vs_torch,
        }

    rows = [
        row("teacher", "ov-int8", 296.3, 1.79, 20.3, 0.834, 3.87),
        row("student", "ov-int8", 900.0, 0.85, 6.0, 0.828, 11.7),
        row("teacher", "torch-fp32", 76.6, 8.22, 83.6, 0.834, 1.0),
        row("student", "torch-fp32", 230.0, 3.1, 25.0, 0.829, 3.0),
    ]
    deploy = {"models": {"student": {"target": "openvino-int8", "bundle_size": {"gzip_bytes": 5_000_000}}}}
    compile_ = {"models": {"teacher": {"sizes": {"onnx_fp32": {"gzip_bytes": 83_600_000}}}}}
    lines = render_gain(rows, deploy, compile_, (1, 32), (32, 128))
    lead = lines[2]
    assert lines[0] == "## What pruning bought"
    assert (
        "ov-int8" in lead
        and "3.04× its teacher's throughput at b32×s128" in lead
        and "2.11× at b1×s32" in lead
    )
    assert "1/16.7" in lead and "-0.0060" in lead
    assert any("teacher on ov-int8 alone, unpruned, runs 3.87×" in l for l in lines)
    assert headline(rows, deploy)["student_vs_teacher_x"] == round(900 / 296.3, 4)
