"""The compression sweep: point params generation (pure), and two tiny points run end to end with the report."""

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline import sweep, sweep_report
from pipeline.core.params import ParamsError, load_section
from pipeline.core.schema import SWEEP_STAGES
from pipeline.reporting.sweep_render import levels, pareto, point_row, render, winners

ROOT = Path(__file__).resolve().parents[1]


def sweep_doc(base: dict, points: dict) -> dict:
    doc = copy.deepcopy(base)
    for section, keys in (
        ("prune", ("out_dir", "checkpoint_dir")),
        ("export", ("out_dir",)),
        ("compile", ("out_dir", "trt_engine_cache_path")),
        ("report", ("out_dir",)),
    ):
        for k in keys:  # the point stages' own outputs must be relative to land in each point's folder
            doc[section][k] = f"{section}_{k}"
    doc["sweep"] = {
        "out_dir": "points",
        "overrides": {
            "prune": {"epochs": 2},
            "export": {"models": ["student"]},
            "compile": {"models": ["student"]},
            "eval": {"models": ["student"], "backends": ["torch-fp32", "ov-int8"], "fail_on_drift": False},
            "bench": {
                "models": ["student"],
                "backends": ["ov-int8"],
                "batch_sizes": [4],
                "seq_lens": [16],
                "streams": [1],
                "crosscheck_shapes": [[4, 16]],
            },
        },
        "points": points,
    }
    doc["sweep_report"] = {"out_dir": "sweep_report", "backends": ["ov-int8"], "shape": [4, 16]}
    return doc


def test_point_params_cover_the_stages_it_runs():
    stages = yaml.safe_load((ROOT / "sweeps" / "dvc.yaml").read_text())["stages"]
    run, params = stages["sweep"]["do"], stages["sweep_params"]["do"]
    for stage in SWEEP_STAGES:  # a point reruns when its params change (its code deps: test_deps.py)
        assert stage in params["params"]
    assert {"sweep.points.${key}", "sweep.overrides", *sweep.SHARED} <= set(params["params"])
    assert "${sweep.out_dir}/${key}/params.yaml" in run["deps"] and "params" not in run


def test_reference_extra_point_command_parses_and_validates(tmp_path):
    """The reference's `dvc exp run -S` example must get past Hydra (DVC's parser) and the schema."""
    import re

    from hydra.core.override_parser.overrides_parser import OverridesParser

    example = re.search(
        r"-S '(\+sweep\.points\.[a-z][^']+)'", (ROOT / "docs/reference.md").read_text()
    ).group(1)
    override = OverridesParser.create().parse_overrides([example])[0]
    name = override.key_or_group.split(".")[-1]
    path = tmp_path / "params.yaml"
    path.write_text(
        yaml.safe_dump({"sweep": {"out_dir": "p", "overrides": {}, "points": {name: override.value()}}})
    )
    assert load_section("sweep", path)["points"][name]["target_sparsity"] == 0.8


def test_repository_sweep_points_are_valid():
    doc = yaml.safe_load((ROOT / "params.yaml").read_text())
    points = load_section("sweep", ROOT / "params.yaml")["points"]
    methods = {
        sweep.method(sweep.point_doc(doc, n, ROOT, ROOT / "sweeps/points" / n)["prune"]) for n in points
    }
    assert {"unstructured", "structured+slim", "layer-drop", "N:M 2:4", "block 4x1"} <= methods


def test_point_doc_places_outputs_in_point_folder(tmp_path):
    base = tmp_path / "proj"
    doc = sweep_doc(
        {s: v for s, v in yaml.safe_load((ROOT / "params.yaml").read_text()).items()},
        {"slim-50": {"pattern": "channelx1", "target_sparsity": 0.5}},
    )
    pdoc = sweep.point_doc(doc, "slim-50", base, base / "points" / "slim-50")
    assert (
        pdoc["data"]["out_dir"] == "../../data/tokenized"
        and pdoc["teacher"]["out_dir"] == "../../models/teacher"
    )
    assert pdoc["prune"]["out_dir"] == "prune_out_dir" and pdoc["prune"]["pattern"] == "channelx1"
    assert pdoc["prune"]["epochs"] == 2 and pdoc["eval"]["fail_on_drift"] is False
    assert sweep.method(pdoc["prune"]) == "structured+slim"
    with pytest.raises(ParamsError, match="no point 'nope'; defined: slim-50"):
        sweep.point_doc(doc, "nope", base, base)
    doc["sweep"]["points"]["bad"] = {"target_sparsity": 1.5}
    with pytest.raises(ParamsError, match=r"prune.target_sparsity = 1.5.*sweep point 'bad'"):
        sweep.point_doc(doc, "bad", base, base)
    doc["prune"]["out_dir"] = "/elsewhere/student"
    with pytest.raises(ParamsError, match="prune.out_dir = '/elsewhere/student' lies outside"):
        sweep.point_doc(doc, "slim-50", base, base)


@pytest.mark.parametrize(
    "sweep_section, message",
    [
        ({"points": {"A b": {"pattern": "1x1"}}}, "point names"),
        ({"points": {"1x1-20": {"pattern": "1x1"}}}, "start with a lowercase letter"),
        ({"points": {"a.b": {"pattern": "1x1"}}}, "point names"),
        ({"points": {"p": {"out_dir": "x"}}}, "unknown or path key"),
        ({"points": {"p": {"epochs": 1}}, "overrides": {"data": {"seed": 1}}}, "cannot be overridden"),
        ({"points": {}}, "at least one point"),
    ],
)
def test_sweep_section_errors_name_the_key(tmp_path, sweep_section, message):
    section = {"out_dir": "points", "overrides": {}, **sweep_section}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"sweep": section}))
    with pytest.raises(ParamsError, match=message):
        load_section("sweep", path)


def test_levels_group_nearby_remaining_weights():
    # slimming lands a few points above its target; a new level starts past 1.25x the level's smallest
    assert levels([0.5, 0.514, 0.1667, 0.1806, 0.097, 0.1, 0.05]) == [3, 3, 2, 2, 1, 1, 0]
    assert levels([]) == []


def row(point, method, remaining, score, tput):
    return {
        "point": point,
        "method": method,
        "encoder_remaining_weights": remaining,
        "score": score,
        "backend_score": {},
        "throughput_seq_per_s": {"ov-int8": tput},
    }


def test_pareto_and_winners():
    assert pareto([("a", 0.9, 10), ("b", 0.8, 20), ("c", 0.7, 15), ("d", 0.9, 5)]) == {"a", "b"}
    rows = [
        row("u50", "unstructured", 0.5, 0.9, 100),
        row("l50", "layer-drop", 0.5, 0.85, 200),
        row("u10", "unstructured", 0.1, 0.8, "n/a"),
        row("teacher", "dense teacher", 1.0, 0.95, 80),
    ]
    w = winners(rows, "ov-int8")
    assert [x["level"] for x in w] == ["50.0%", "10.0%"] and w[0]["points"] == ["u50", "l50"]
    assert (w[0]["most_accurate"], w[0]["fastest"], w[0]["methods"]) == ("unstructured", "layer-drop", 2)
    assert (w[1]["fastest"], w[1]["throughput_seq_per_s"]) == (
        "n/a",
        "n/a",
    )  # no bench cell: no winner, no crash


def test_front_uses_each_backends_own_score_and_skips_the_teacher():
    from pipeline.reporting.sweep_render import front

    def r(point, score, tput, own=None, method="unstructured"):
        return {
            "point": point,
            "method": method,
            "score": score,
            "backend_score": {} if own is None else {"ov-int8": own},
            "throughput_seq_per_s": {"ov-int8": tput, "ort-int8": 10.0},
        }

    rows = [
        r("teacher", 0.99, 1000.0, method="dense teacher"),  # beats all, but is not a candidate
        r("a", 0.90, 100.0),
        r("b", 0.95, 80.0, own=0.70),  # torch 0.95, but INT8 on ov-int8 scores 0.70: dominated there by a
        r("c", 0.80, 200.0),
        r("d", 0.85, "n/a"),  # no bench cell on ov-int8: no candidate there
        r("e", 0.80, 150.0),
    ]  # c is as accurate and faster
    assert front(rows, ["ov-int8"]) == {("a", "ov-int8"), ("c", "ov-int8")}
    # on ort-int8 every candidate is equally fast: only the most accurate by torch score (b) survives
    assert front(rows, ["ort-int8"]) == {("b", "ort-int8")}


def point_docs(ov_int8: bool) -> dict:
    cells = (
        [
            {
                "model": "student",
                "backend": "ov-int8",
                "batch": 4,
                "seq_len": 16,
                "streams": 1,
                "throughput_seq_per_s": 50.0,
                "speedup_vs_baseline": 2.0,
                "sparse_fc_layers": 3,
            }
        ]
        if ov_int8
        else []
    )
    return {
        "sweep": {"method": "unstructured", "wall_time_s": 10.0, "finished_at": "t"},
        "prune": {
            "accuracy": 0.8,
            "f1": 0.7,
            "score": 0.75,
            "delta_score": -0.05,
            "encoder_remaining_weights": 0.5,
            "model_remaining_weights": 0.7,
        },
        "eval": {
            "metrics": ["accuracy", "f1"],
            "results": [{"model": "student", "backend": "ov-int8", "score": 0.74}],
        },
        "bench": {"results": cells},
    }


def test_point_row_and_render_with_a_missing_bench_cell():
    ctx = {
        "task": "mrpc",
        "metrics": ["accuracy", "f1"],
        "backends": ["ov-int8", "ort-int8"],
        "shape": [4, 16],
        "threads": 1,
        "cpu": "x",
        "front": {("a", "ov-int8")},
        "cost": "c",
    }
    a, b = (
        point_row("a", point_docs(True), ctx["backends"], (4, 16)),
        point_row("b", point_docs(False), ctx["backends"], (4, 16)),
    )
    assert a["throughput_seq_per_s"] == {"ov-int8": 50.0, "ort-int8": "n/a"} and a["backend_score"] == {
        "ov-int8": 0.74
    }
    assert b["throughput_seq_per_s"]["ov-int8"] == "n/a" and b["sparse_fc_layers"] == "n/a"
    text = render([a, b], winners([a, b], "ov-int8"), ctx)
    assert (
        "| a | 50.0% | 70.0% | 0.8000 | 0.7000 | 0.7500 | -5.00 | 0.7400 | 50.0 ★ | n/a | 2.00× | 3 |" in text
    )
    assert "| b | 50.0% | 70.0% |" in text and "| *Sparse pruning* |" in text


def test_cost_counts_what_changed_since_the_last_report():
    from datetime import datetime

    def pts(**finished):
        return {
            n: {"sweep": {"started_at": at, "finished_at": at, "wall_time_s": 10.0}}
            for n, at in finished.items()
        }

    now = datetime.fromisoformat("2026-01-01T01:00:00+00:00")
    first = sweep_report.cost(pts(a="2026-01-01T00:00:00+00:00", b="2026-01-01T00:30:00+00:00"), [], now)
    assert first["recomputed"] == ["a", "b"] and first["this_run_wall_time_s"] == 3600.0
    same_second = pts(a="2026-01-01T00:00:00+00:00", b=first["at"])  # b reran within the report's second
    again = sweep_report.cost(same_second, [first], now)
    assert again["recomputed"] == ["b"] and again["points_wall_time_s_total"] == 20.0
    assert sweep_report.cost(same_second, [first, again], now)["recomputed"] == []


def check_first_report(first: dict, tmp_path: Path) -> tuple:
    """The report's rows, winners and front against the points' own metrics files, worked out by hand;
    returns (front point a, b, their rows, which are dominated)."""
    assert first["rows"][0]["point"] == "teacher" and len(first["rows"]) == 3
    rows = {r["point"]: r for r in first["rows"]}
    lay, uns = rows["layers-50"], rows["unstr-50"]
    for r, name in ((lay, "layers-50"), (uns, "unstr-50")):  # the rows are the points' own metrics files
        pm = json.loads((tmp_path / "points" / name / "metrics" / "prune.json").read_text())
        assert (r["score"], r["metrics"]["accuracy"], r["metrics"]["f1"]) == (
            pm["score"],
            pm["accuracy"],
            pm["f1"],
        )
        cell = next(
            c
            for c in json.loads(
                (tmp_path / "points" / name / "metrics" / "details" / "bench.json").read_text()
            )["results"]
            if (c["model"], c["backend"], c["batch"], c["seq_len"], c["streams"])
            == ("student", "ov-int8", 4, 16, 1)
        )
        assert r["throughput_seq_per_s"]["ov-int8"] == cell["throughput_seq_per_s"]
    [level] = first["winners"]  # both points keep 50%: one level, in table order (structural before sparse)
    assert (level["points"], level["methods"]) == (["layers-50", "unstr-50"], 2)
    best = [r["method"] for r in (lay, uns) if r["score"] == max(lay["score"], uns["score"])]
    assert level["most_accurate"] == " = ".join(best)
    assert level["fastest"] == max((lay, uns), key=lambda r: r["throughput_seq_per_s"]["ov-int8"])["method"]
    assert first["recomputed"] == ["layers-50", "unstr-50"] and first["points_wall_time_s_total"] > 0
    # The front by hand from the two points (the teacher is a reference line, not a candidate): a point is off
    # it only when the other is at least as good on both axes and better on one. Score: the backend's own.
    (a, sa, ta), (b, sb, tb) = (
        (r["point"], r["backend_score"]["ov-int8"], r["throughput_seq_per_s"]["ov-int8"]) for r in (lay, uns)
    )
    evals = json.loads((tmp_path / "points" / a / "metrics" / "details" / "eval.json").read_text())["results"]
    assert sa == next(e["score"] for e in evals if (e["model"], e["backend"]) == ("student", "ov-int8"))
    dominated = {
        a: sb >= sa and tb >= ta and (sb, tb) != (sa, ta),
        b: sa >= sb and ta >= tb and (sa, ta) != (sb, tb),
    }
    assert first["pareto_front"] == sorted(f"{n} ov-int8" for n in (a, b) if not dominated[n])
    return a, b, lay, uns, dominated


def test_sweep_points_and_report(built, tmp_path):
    base_params, base_path, _ = built
    base_dir = Path(base_path).parent
    doc = sweep_doc(
        base_params,
        {
            "unstr-50": {"pattern": "1x1", "target_sparsity": 0.5},
            "layers-50": {"student_layers": [0], "target_sparsity": 0.0},
        },
    )
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    (tmp_path / "metrics" / "details").mkdir(parents=True)
    shutil.copy(base_dir / "metrics" / "details" / "teacher.json", tmp_path / "metrics" / "details")
    runs = {n: sweep.main(n, str(path)) for n in doc["sweep"]["points"]}
    assert runs["layers-50"]["method"] == "layer-drop" and runs["unstr-50"]["method"] == "unstructured"
    for name, m in runs.items():
        assert abs(m["encoder_remaining_weights"] - 0.5) <= 0.005, (
            name
        )  # one axis for sparse and layer-dropped
        assert set(m["stage_wall_time_s"]) == set(sweep.STAGES)
        folder = tmp_path / "points" / name
        point = yaml.safe_load((folder / "params.yaml").read_text())
        assert (folder / point["data"]["out_dir"]).resolve() == Path(base_params["data"]["out_dir"]).resolve()
        assert (folder / "prune_out_dir" / "model.safetensors").is_file()  # the base student is untouched
        bench = json.loads((folder / "metrics" / "details" / "bench.json").read_text())
        assert {r["backend"] for r in bench["results"] if r["model"] == "student"} == {"ov-int8"}

    first = sweep_report.main(str(path))
    a, b, lay, uns, dominated = check_first_report(first, tmp_path)
    out = tmp_path / "sweep_report"
    text = (out / "sweep.md").read_text()
    for n, r in ((a, lay), (b, uns)):  # the star marks exactly the front
        star = (
            f"| {r['throughput_seq_per_s']['ov-int8']:.1f} ★ |" in text.split(f"| {n} |")[1].splitlines()[0]
        )
        assert star == (not dominated[n]), n
    assert "| unstructured | unstr-50 |" in text and "| layer-drop | layers-50 |" in text
    assert all(
        (out / f).stat().st_size > 0 for f in ("accuracy_vs_remaining.png", "throughput_vs_remaining.png")
    )
    second = sweep_report.main(str(path))  # nothing rerun since the last report
    assert second["recomputed"] == [] and len((out / "history.jsonl").read_text().splitlines()) == 2

    doc["sweep"]["points"]["unstr-50"]["target_sparsity"] = 0.6  # results no longer match the params
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(
        ValueError, match="point 'unstr-50' .* was run with .* python -m pipeline.sweep unstr-50"
    ):
        sweep_report.main(str(path))
    doc["sweep_report"]["shape"] = [8, 16]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match=r"sweep_report.shape = \[8, 16\] is not in the points' bench grid"):
        sweep_report.main(str(path))
    shutil.rmtree(tmp_path / "points" / "layers-50" / "metrics")
    doc["sweep"]["points"]["unstr-50"]["target_sparsity"] = 0.5
    doc["sweep_report"]["shape"] = [4, 16]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(
        FileNotFoundError, match="'layers-50' has no sweep.json.*python -m pipeline.sweep layers-50"
    ):
        sweep_report.main(str(path))


def test_methods_fall_in_sparsebert_groups():
    from pipeline.reporting.sweep_render import category

    assert [
        category(m)
        for m in (
            "dense teacher",
            "layer-drop",
            "structured+slim",
            "unstructured",
            "N:M 2:4",
            "block 4x1",
            "layer-drop + unstructured",
        )
    ] == [
        "Without pruning",
        "Structural pruning",
        "Structural pruning",
        "Sparse pruning",
        "Sparse pruning",
        "Sparse pruning",
        "Structural + sparse",
    ]


def test_gpu_slots_give_side_by_side_workers_different_gpus(tmp_path):
    """dvc queue workers on a GPU machine: each stage run holds one GPU's lock; a third waits for one."""
    import threading

    from pipeline.core.runs import gpu_slot

    with gpu_slot(0) as none:
        assert none == {}
    with gpu_slot(2, tmp_path) as a, gpu_slot(2, tmp_path) as b:
        assert {a["CUDA_VISIBLE_DEVICES"], b["CUDA_VISIBLE_DEVICES"]} == {"0", "1"}
        got = []

        def take():
            with gpu_slot(2, tmp_path, wait_s=0.05) as slot:
                got.append(slot)

        third = threading.Thread(target=take)
        third.start()
        third.join(0.3)
        assert third.is_alive() and not got  # both GPUs taken: it waits
    third.join(5)
    assert got and got[0]["CUDA_VISIBLE_DEVICES"] in ("0", "1")
