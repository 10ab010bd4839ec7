"""The report stage and eval.compare, from hand-written metrics files (no models, no runtimes)."""
import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml

from eval import compare
from eval.render import NA, table_rows
from pipeline import report
from pipeline.report import ReportInputError

FIXTURES = Path(__file__).parent / "fixtures" / "metrics"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LAT, TPUT = [1, 32], [32, 128]


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def tput(bench: dict, model: str, backend: str, shape) -> float:
    (row,) = [r for r in bench["results"] if (r["model"], r["backend"], r["batch"], r["seq_len"]) ==
              (model, backend, *shape) and r["streams"] == 1]
    return row["throughput_seq_per_s"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A cwd holding metrics/ copies and a params.yaml with only the report section."""
    shutil.copytree(FIXTURES, tmp_path / "metrics")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"report": {"out_dir": "reports", "latency_shape": LAT,
                                                 "throughput_shape": TPUT}}))
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
    assert "**GAP > 15%**: student ov-int8 b32×s128" in md
    assert "python -m eval.compare" in md
    assert table_line(capsys.readouterr().out, "student", "ov-int8") == line

    assert metrics["rows"] == len(fixture("eval")["results"])
    assert metrics["student_ov_int8_speedup_x"] == round(speedup, 4)
    assert metrics["student_ov_int8_speedup_x_latency_shape"] == round(speedup_lat, 4)
    assert metrics["sparse_on_off_x"] == round(on_off, 4)
    assert metrics["flagged_backends"] == 1 and metrics["crosscheck_gaps_over_15pct"] == 1
    assert json.loads((root / "metrics" / "report.json").read_text())["rows"] == metrics["rows"]

    for png in ("accuracy_vs_throughput.png", "throughput.png"):
        assert (root / "reports" / png).read_bytes()[:8] == PNG_MAGIC
    acc = json.loads((root / "reports" / "plots" / "accuracy_vs_throughput.json").read_text())
    grid = json.loads((root / "reports" / "plots" / "throughput.json").read_text())
    assert len(acc) == metrics["rows"] and len(grid) == len(bench["results"])
    assert all({"label", "model", "backend", "score", "throughput_seq_per_s"} <= set(r) for r in acc)
    assert all({"label", "model", "backend", "batch", "seq_len", "throughput_seq_per_s"} <= set(r) for r in grid)
    assert len({r["label"] for r in grid}) == len(grid)  # DVC bar plots key on the label
    assert not list(root.glob(".reports.tmp-*"))


def test_missing_metrics_file_names_it_and_its_stage(workdir):
    root, params = workdir
    (root / "metrics" / "bench.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"metrics/bench\.json \(written by stage `bench`"):
        report.main(params)
    assert not (root / "reports").exists()


def test_malformed_row_names_file_and_key(workdir):
    root, params = workdir
    bench = fixture("bench")
    del bench["results"][3]["throughput_seq_per_s"]
    (root / "metrics" / "bench.json").write_text(json.dumps(bench))
    with pytest.raises(ReportInputError, match=r"bench\.json: results\[3\] lacks key\(s\) \['throughput_seq_per_s'\]"):
        report.main(params)


def test_missing_bench_cell_is_na_not_invented():
    bench = fixture("bench")
    bench["results"] = [r for r in bench["results"]
                        if not (r["model"], r["backend"], r["batch"], r["seq_len"]) == ("teacher", "ort-int8", *LAT)]
    rows = table_rows(fixture("teacher"), fixture("prune"), fixture("compile"), fixture("eval"), bench, LAT, TPUT)
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
    row = next(r for r in b["results"]
               if (r["model"], r["backend"], r["batch"], r["seq_len"]) == ("student", "ov-int8", *TPUT))
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
    assert table_line(text, "student", "ort-int8 | 1 | 32").endswith("| not comparable: precision int8 vs fp32 |")
    assert table_line(text, "teacher", "torch-fp32 | 32 | 128").endswith("| not comparable: threads 8 vs 4 |")
    assert table_line(text, "student", "ov-int8 | 32 | 128").endswith("| — | — | not comparable: missing in B |")
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
    assert compare.flags_for(fa, fb, fa["rows"][ov], fb["rows"][ov]) == \
        [f"openvino {a['env']['versions']['openvino']} vs 2099.1.0"]
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
    (root / "metrics" / "bench.json").write_text(json.dumps(bench))
    m = report.main(params)
    md = (root / "reports" / "report.md").read_text()
    assert m["unstable_bench_cells"] == 1 and "## Unstable timings" in md and "10.00, 20.00 ms" in md
