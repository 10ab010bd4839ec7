"""Bad params stop a stage before any model loads, with a message naming the key."""
import copy
from pathlib import Path
import os

import pytest

from pipeline import data, prune, teacher
from tests.conftest import ROOT
from pipeline.core.params import ParamsError, load_section, validate
from pipeline.core.schema import SCHEMA

BAD = [
    ("prune", "target_sparsity", 1.0, "prune.target_sparsity"),
    ("prune", "target_sparsity", -0.1, "prune.target_sparsity"),
    ("prune", "target_sparsity", "high", "prune.target_sparsity"),
    ("prune", "pattern", "3y1", "1x1"),
    ("prune", "pattern", "0x4", "NxM blocks"),
    ("prune", "pattern", "2:4", "exceeds N/M"),          # target 0.8 > 2/4
    ("prune", "pruning_type", "movement", "magnitude, snip_momentum"),
    ("prune", "scope", "everywhere", "local, global"),
    ("prune", "end", 0.0, "prune.end"),
    ("prune", "student_layers", [3, 1], "prune.student_layers"),
    ("prune", "init", "random", "pretrained, teacher"),
    ("teacher", "epochs", 0, "teacher.epochs"),
    ("teacher", "group_by_length", "yes", "teacher.group_by_length"),
    ("teacher", "learning_rate", True, "teacher.learning_rate"),
    ("data", "task", "sst3", "cola, sst2, mrpc"),
    ("data", "source", "s3", "glue, file, hub"),
    ("data", "max_length", 4, "data.max_length"),
    ("data", "metrics", ["bleu"], "bleu"),
    ("data", "labels", ["pos", "pos"], "repeats a label"),
]


@pytest.mark.parametrize("section,key,value,needle", BAD, ids=[f"{s}.{k}={v!r}" for s, k, v, _ in BAD])
def test_bad_value_names_key(project, section, key, value, needle):
    params, write = project
    params[section][key] = value
    path = write(params)
    stage = {"data": data, "teacher": teacher, "prune": prune}[section]
    with pytest.raises(ParamsError, match=needle.replace("[", r"\[")):
        stage.main(path)
    assert not any(os.path.exists(params[s]["out_dir"]) for s in ("data", "teacher", "prune"))


def test_unknown_and_missing_keys(project):
    params, _ = project
    p = copy.deepcopy(params["prune"])
    p["target_sparsty"] = 0.9
    with pytest.raises(ParamsError, match="unknown key.*prune.target_sparsty"):
        validate("prune", p)
    p = copy.deepcopy(params["teacher"])
    del p["seed"]
    with pytest.raises(ParamsError, match="missing key.*teacher.seed"):
        validate("teacher", p)


def test_glue_source_needs_task(project):
    params, write = project
    params["data"].update(source="glue", task=None, glue_dir="x")
    with pytest.raises(ParamsError, match="data.task is required"):
        load_section("data", write(params))


def test_missing_file_and_section(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_section("data", tmp_path / "nope.yaml")
    (tmp_path / "p.yaml").write_text("data: {}\n")
    with pytest.raises(ParamsError, match="section 'prune' missing"):
        load_section("prune", tmp_path / "p.yaml")


@pytest.mark.parametrize("path", ["params.yaml", "profiles/mrpc/params.yaml", "profiles/sst2-throughput/params.yaml"])
def test_repo_params_are_valid(path):
    import yaml

    present = yaml.safe_load((ROOT / path).read_text())
    for section in SCHEMA:  # the sweep's sections are needed only where a sweep is defined
        if section in present or section not in ("sweep", "sweep_report"):
            assert load_section(section, ROOT / path)


def test_paths_are_relative_to_the_params_file(tmp_path):
    import yaml

    doc = yaml.safe_load((ROOT / "params.yaml").read_text())
    profile = tmp_path / "profiles" / "mrpc"
    profile.mkdir(parents=True)
    (profile / "params.yaml").write_text(yaml.safe_dump(doc))
    p = load_section("prune", profile / "params.yaml")
    assert p["out_dir"] == str(profile / "models" / "student")
    assert load_section("data", profile / "params.yaml")["train_file"] == str(profile / "data" / "demo" / "train.tsv")
    assert load_section("prune", ROOT / "params.yaml")["out_dir"] == str(ROOT / "models" / "student")

    from pipeline.core.params import metrics_dir

    assert metrics_dir("params.yaml") == Path("metrics") and metrics_dir(profile / "params.yaml") == profile / "metrics"
