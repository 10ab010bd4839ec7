"""Bad params stop a stage before any model loads, with a message naming the key."""

import os
import re
from pathlib import Path

import pytest

from pipeline import data, prune, teacher
from tests.conftest import ROOT, tiny_params
from pipeline.core.params import ParamsError, load_section, validate
from pipeline.core.schema import DEFAULTS, SCHEMA, Key, inferred

BAD = [
    ("prune", "target_sparsity", 1.0, "prune.target_sparsity"),
    ("prune", "target_sparsity", -0.1, "prune.target_sparsity"),
    ("prune", "target_sparsity", "high", "prune.target_sparsity"),
    ("prune", "pattern", "3y1", "1x1"),
    ("prune", "pattern", "0x4", "NxM blocks"),
    ("prune", "pattern", "2:4", "exceeds N/M"),  # target 0.8 > 2/4
    ("prune", "pruning_type", "obs", "magnitude, snip_momentum, snip, gradient, movement"),
    ("prune", "scope", "everywhere", "local, global"),
    ("prune", "end", 0.0, "prune.end"),
    ("prune", "student_layers", [3, 1], "prune.student_layers"),
    ("prune", "init", "random", "pretrained, teacher"),
    ("prune", "augment_copies", 2, "augmented copies have no true label"),  # with the tiny alpha_ce 0.5
    ("prune", "precision", "fp8", "fp32, bf16, fp16"),
    ("prune", "device", "tpu", "auto, cpu, cuda"),
    ("prune", "precision", "fp16", "prune.precision = 'fp16' with prune.target_sparsity > 0"),
    ("teacher", "launcher", "deepspeed", "python, torchrun, accelerate launch"),
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


def valid_sections() -> dict:
    """A valid value for every section of the schema: the tests' tiny params plus a one-point sweep."""
    doc = tiny_params(Path("/p"), Path("/p/model"))
    doc["sweep"] = {
        "out_dir": "points",
        "overrides": {"prune": {"epochs": 2}},
        "points": {"unstr-50": {"pattern": "1x1", "target_sparsity": 0.5}},
    }
    doc["sweep_report"] = {"out_dir": "report", "backends": ["ov-int8"], "shape": [4, 16]}
    doc["seeds"] = {
        "out_dir": "seeds",
        "seeds": [0, 1],
        "target_sparsities": [0.9],
        "overrides": {"90": {"epochs": 2}},
        "reuse": "verified",
    }
    return {s: {**DEFAULTS[s], **values} for s, values in doc.items()}  # every key, as validate returns them


KEYS = [(s, k) for s in SCHEMA for k in SCHEMA[s]]
WRONG_TYPE = {str: 7, int: "7", float: "0.5", bool: "true", list: "a", dict: ["a"]}
WRONG_ITEM = {str: 1, int: "1", float: "0.5", list: 1}


def test_every_section_has_a_valid_example():
    doc = valid_sections()
    assert set(doc) == set(SCHEMA)  # a new section needs an example here, and then is checked below
    for section in SCHEMA:
        assert validate(section, doc[section]) == {**DEFAULTS[section], **doc[section]}


def test_every_key_has_one_default_and_the_defaults_are_valid():
    assert set(DEFAULTS) == set(SCHEMA)
    for section in SCHEMA:
        assert set(DEFAULTS[section]) == set(SCHEMA[section]), section
        assert validate(section, {}) == DEFAULTS[section]


@pytest.mark.parametrize("section,key", KEYS, ids=[f"{s}.{k}" for s, k in KEYS])
def test_a_key_left_out_takes_its_default(section, key):
    values = valid_sections()[section]
    del values[key]
    assert validate(section, values)[key] == DEFAULTS[section][key]


def test_a_plain_key_is_typed_by_its_default_and_an_untyped_default_is_refused():
    assert inferred("x.flag", False) == Key(bool)
    assert inferred("x.rate", 0.5) == Key(float) and inferred("x.count", 3) == Key(int)
    assert inferred("x.sizes", [1, 32]) == Key(list, item=int)
    for untyped in (None, [], {}, [1, "a"]):
        with pytest.raises(TypeError, match=r"x\.y = .* needs a Key in pipeline/core/schema\.py"):
            inferred("x.y", untyped)
    assert SCHEMA["prune"]["progress"] == Key(bool)  # stated only in defaults.yaml
    with pytest.raises(ParamsError, match=r"prune\.progress = 'yes' has type str; expected bool"):
        validate("prune", {"progress": "yes"})


def test_a_set_key_is_still_checked_against_its_default_free_schema():
    values = valid_sections()["prune"]
    assert values["speedup"] is None and validate("prune", values)["speed_backend"] == "ov-int8"
    with pytest.raises(
        ParamsError, match="prune.speed_backend = 'tflite' is not allowed; allowed: ov-int8, ort-int8"
    ):
        validate("prune", {**values, "speed_backend": "tflite"})
    with pytest.raises(ParamsError, match="prune.speedup .* sparsity on top of it is not supported"):
        validate("prune", {**values, "speedup": 3.0})  # the tiny params prune to 80%


@pytest.mark.parametrize("section", SCHEMA)
def test_unknown_key_is_named_with_the_allowed_ones(section):
    values = valid_sections()[section]
    typo = next(iter(SCHEMA[section]))[:-1] + "_"  # e.g. out_di_: one letter off a real key
    values[typo] = values[next(iter(SCHEMA[section]))]
    with pytest.raises(
        ParamsError,
        match=rf"^params: unknown key\(s\) {section}\.{typo}; "
        rf"allowed: {re.escape(', '.join(SCHEMA[section]))}$",
    ):
        validate(section, values)


@pytest.mark.parametrize("section,key", KEYS, ids=[f"{s}.{k}" for s, k in KEYS])
def test_wrong_type_is_named(section, key):
    spec = SCHEMA[section][key]
    values = valid_sections()[section]
    values[key] = WRONG_TYPE[spec.type]
    name = "list" if spec.type is list else spec.type.__name__
    with pytest.raises(
        ParamsError,
        match=rf"^params: {section}\.{key} = {re.escape(repr(values[key]))} has type "
        rf"{type(values[key]).__name__}; expected {name}( or null)?$",
    ):
        validate(section, values)
    if spec.type is int:  # YAML's true is a bool, and bool is an int to Python: refused all the same
        values[key] = True
        with pytest.raises(ParamsError, match=rf"^params: {section}\.{key} = True has type bool"):
            validate(section, values)
    if not spec.nullable:
        values[key] = None
        with pytest.raises(ParamsError, match=rf"^params: {section}\.{key} is null but required \({name}\)$"):
            validate(section, values)


LIST_KEYS = [(s, k) for s, k in KEYS if SCHEMA[s][k].item is not None]


@pytest.mark.parametrize("section,key", LIST_KEYS, ids=[f"{s}.{k}" for s, k in LIST_KEYS])
def test_wrong_list_item_type_is_named(section, key):
    spec = SCHEMA[section][key]
    values = valid_sections()[section]
    values[key] = [WRONG_ITEM[spec.item]]
    with pytest.raises(
        ParamsError, match=rf"^params: {section}\.{key} = .* must be a list of {spec.item.__name__}$"
    ):
        validate(section, values)


def test_glue_source_needs_task(project):
    params, write = project
    params["data"].update(source="glue", task=None, glue_dir="x")
    with pytest.raises(ParamsError, match="data.task is required"):
        load_section("data", write(params))


def test_missing_file_and_a_section_left_out_takes_the_defaults(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_section("data", tmp_path / "nope.yaml")
    (tmp_path / "p.yaml").write_text("data: {}\n")
    prune = load_section("prune", tmp_path / "p.yaml")
    assert prune["target_sparsity"] == DEFAULTS["prune"]["target_sparsity"]
    assert prune["out_dir"] == str(tmp_path / DEFAULTS["prune"]["out_dir"])  # relative to the params file
    (tmp_path / "p.yaml").write_text("- data\n")
    with pytest.raises(ParamsError, match="must be a mapping of sections"):
        load_section("data", tmp_path / "p.yaml")


PROFILES = sorted(
    str(p.relative_to(ROOT))
    for p in ROOT.glob("profiles/**/params.yaml")
    if not {"seeds", "sweep"} & set(p.parts)
)  # not the generated run records


@pytest.mark.parametrize("path", ["params.yaml", *PROFILES])
def test_repo_params_are_valid(path):
    import yaml

    present = yaml.safe_load((ROOT / path).read_text())
    for section in SCHEMA:  # the sweep's sections are needed only where a sweep is defined; a recipe
        # folder holds the training sections only
        if section in present or (
            "/recipes/" not in path and section not in ("sweep", "sweep_report", "seeds")
        ):
            assert load_section(section, ROOT / path)


@pytest.mark.parametrize("path", PROFILES)
def test_a_profile_states_only_what_differs_from_the_defaults(path):
    """Issue 28: a profile or recipe is a diff. A key stated at its default (or a path the default already
    reaches from that folder) hides what the recipe chose; leave it out. (The repository's params.yaml is
    exempt: dvc.yaml interpolates the keys it states.)"""
    from pipeline.core.params import redundant_keys

    assert redundant_keys(ROOT / path) == []


def test_redundant_keys_compare_resolved_values(tmp_path):
    from pipeline.core.params import redundant_keys

    (tmp_path / "p.yaml").write_text(
        "data: {out_dir: ./data/tokenized, labels: null, max_length: 128, seed: 7}"
        "\nteacher: {out_dir: ../models/teacher}\nprune:\n"
    )
    assert redundant_keys(tmp_path / "p.yaml") == ["data.out_dir", "data.max_length"]  # null is a value too


@pytest.mark.parametrize("path", ["params.yaml", *PROFILES])
def test_run_params_do_not_depend_on_which_defaults_a_file_states(path):
    """A seed's run folder and a sweep point get the same generated params whether the base file states a
    key at its default or leaves it (or its whole section) out: profiles can shrink without rerunning."""
    import yaml

    from pipeline import seeds, sweep
    from pipeline.core.params import validated

    def made(make, d, *args):  # the generated params, or the error that refuses them
        try:
            return make(d, *args)
        except ParamsError as e:
            return str(e)

    base = (ROOT / path).parent
    doc = yaml.safe_load((ROOT / path).read_text())
    full = {s: validated(doc, s) for s in SCHEMA}  # every key stated
    p, seed = validated(doc, "seeds"), validated(doc, "seeds")["seeds"][0]
    for sparsity in p["target_sparsities"]:
        args = (sparsity, seed, base, base / p["out_dir"] / seeds.run_name(sparsity, seed))
        assert made(seeds.run_doc, doc, *args) == made(seeds.run_doc, full, *args)
    for point in validated(doc, "sweep")["points"] if "sweep" in doc else ():
        args = (point, base, base / full["sweep"]["out_dir"] / point)
        assert made(sweep.point_doc, doc, *args) == made(sweep.point_doc, full, *args)


@pytest.mark.parametrize(
    "written, read",
    [
        ("./mini", "{dir}/mini"),
        ("../models/mini", "{up}/models/mini"),
        ("/opt/mini", "/opt/mini"),
        ("org/mini", "org/mini"),
        ("bundled:all-MiniLM-L6-v2", "bundled:all-MiniLM-L6-v2"),
        ("..", "{up}"),
    ],
)
def test_a_local_model_is_relative_to_the_params_file(tmp_path, monkeypatch, written, read):
    """data.model written as ./x or ../x is a folder beside the params file, like every other path; a hub
    id or bundled: stays as written. A seed's run folder, two levels down, still reaches the same folder."""
    import yaml

    from pipeline.core.params import is_path
    from pipeline.core.runs import relocate
    from pipeline.core.schema import SCHEMA

    doc = yaml.safe_load((ROOT / "params.yaml").read_text())
    doc["data"]["model"] = written
    profile = tmp_path / "profiles" / "mrpc"
    profile.mkdir(parents=True)
    (profile / "params.yaml").write_text(yaml.safe_dump(doc))
    want = read.format(dir=profile, up=profile.parent)
    assert load_section("data", profile / "params.yaml")["model"] == want
    moved = relocate("data", doc["data"], profile, profile / "seeds" / "95-s0")
    assert is_path(SCHEMA["data"]["model"], moved["model"]) == (want != written or written.startswith("/"))
    if written.startswith("/"):  # an absolute path means the same folder from any run's folder
        assert moved["model"] == written
    if want != written:
        assert os.path.normpath(profile / "seeds" / "95-s0" / moved["model"]) == want
    if written == "./mini":  # the repository's params.yaml is read by a relative name: the path stays one
        monkeypatch.chdir(profile)
        assert load_section("data", "params.yaml")["model"] == "./mini"


def test_paths_are_relative_to_the_params_file(tmp_path):
    import yaml

    doc = yaml.safe_load((ROOT / "params.yaml").read_text())
    profile = tmp_path / "profiles" / "mrpc"
    profile.mkdir(parents=True)
    (profile / "params.yaml").write_text(yaml.safe_dump(doc))
    p = load_section("prune", profile / "params.yaml")
    assert p["out_dir"] == str(profile / "models" / "student")
    assert load_section("data", profile / "params.yaml")["train_file"] == str(
        profile / "data" / "demo" / "train.tsv"
    )
    assert load_section("prune", ROOT / "params.yaml")["out_dir"] == str(ROOT / "models" / "student")

    from pipeline.core.params import metrics_dir

    assert (
        metrics_dir("params.yaml") == Path("metrics")
        and metrics_dir(profile / "params.yaml") == profile / "metrics"
    )
