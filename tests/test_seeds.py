"""pipeline.seeds: one recipe over seeds and sparsities, its summary, per-sparsity overrides (prune keys
and a run's own distillation rows) and reuse of finished runs."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest


def test_seeds_summarise_each_sparsity_over_its_runs(trained):
    from pipeline import seeds

    params, write = trained
    params["prune"]["epochs"] = 1
    params["seeds"] = {
        "out_dir": str(Path(params["data"]["out_dir"]).parent / "seeds"),
        "seeds": [0, 1],
        "target_sparsities": [0.5],
        "overrides": {},
        "reuse": "verified",
    }
    m = seeds.main(write(params))
    runs = m["runs"]
    assert [(r["seed"], r["target_sparsity"]) for r in runs] == [(0, 0.5), (1, 0.5)]
    acc = [r["accuracy"] for r in runs]
    s = m["summary"]["0.5"]
    assert s["n"] == 2 and s["accuracy"]["mean"] == pytest.approx(np.mean(acc), abs=1e-6)
    assert s["accuracy"]["std"] == pytest.approx(np.std(acc, ddof=1), abs=1e-6)
    assert s["delta_score"]["min"] <= s["delta_score"]["mean"] <= s["delta_score"]["max"]
    again = seeds.main(write(params))  # finished runs are reused, not retrained
    assert again["runs"] == runs and again["stage_wall_time_s"] == 0


def test_seeds_overrides_per_sparsity_and_reuse_on_params(trained):
    """A longer recipe at one sparsity is stated in seeds.overrides; a run whose stamp is gone (a fresh
    clone) is reused on its params alone only with reuse: params, and says its inputs were not verified."""
    from pipeline import seeds

    params, write = trained
    params["prune"]["epochs"] = 1
    out = Path(params["data"]["out_dir"]).parent / "seeds"
    params["seeds"] = {
        "out_dir": str(out),
        "seeds": [0],
        "target_sparsities": [0.5, 0.6],
        "overrides": {"60": {"epochs": 2}},
        "reuse": "params",
    }
    m = seeds.main(write(params))
    assert [(r["target_sparsity"], r["epochs"], r["inputs_verified"]) for r in m["runs"]] == [
        (0.5, 1, True),
        (0.6, 2, True),
    ]
    for stamp in out.glob("*/inputs.sha256"):
        stamp.unlink()
    params["seeds"]["overrides"] = {"60": {"epochs": 1}}  # 60% now differs in its params: it is retrained
    again = seeds.main(write(params))
    assert [(r["epochs"], r["inputs_verified"]) for r in again["runs"]] == [(1, False), (1, True)]
    assert again["runs"][0]["accuracy"] == m["runs"][0]["accuracy"]


def test_a_seeds_override_gives_its_runs_their_own_distillation_rows(trained):
    """seeds.overrides' data keys: the 60% run tokenizes its own train rows in its folder (the dev set and
    the teacher stay the base run's) and says so in seeds.json; the 50% run uses the base data. A bad data
    value fails before any run trains; a run whose own data folder is gone is tokenized again and still
    reused while its stamp matches, and refused if its dev set no longer equals the base run's."""
    from pipeline import seeds
    from pipeline.core.params import ParamsError

    params, write = trained
    params["prune"]["epochs"] = 1
    base_data = Path(params["data"]["out_dir"])
    out = base_data.parent / "seeds"
    params["seeds"] = {
        "out_dir": str(out),
        "seeds": [0],
        "target_sparsities": [0.5, 0.6],
        "overrides": {"60": {"data": {"max_train_samples": 0}}},
        "reuse": "verified",
    }
    with pytest.raises(
        ParamsError, match=r"seeds.overrides\['60'\].data: params: data.max_train_samples = 0"
    ):
        seeds.main(write(params))
    assert not out.exists()
    params["seeds"]["overrides"] = {"60": {"data": {"max_train_samples": 32, "seed": 1}}}
    m = seeds.main(write(params))
    assert [r["train_rows"] for r in m["runs"]] == ["base", {"max_train_samples": 32, "seed": 1}]
    own = out / "60-s0" / "data" / "tokenized"
    assert json.loads((out / "60-s0" / "metrics" / "data.json").read_text())["train_examples"] == 32
    assert (own / "eval.safetensors").read_bytes() == (base_data / "eval.safetensors").read_bytes()
    assert not (out / "50-s0" / "data").exists()
    assert m["runs"][1]["steps"] < m["runs"][0]["steps"]  # fewer rows, fewer steps at the same batch size
    again = seeds.main(write(params))
    assert again["runs"] == m["runs"] and again["stage_wall_time_s"] == 0
    shutil.rmtree(own)  # its data folder is not kept: tokenized again, the stamp still matches, no retraining
    third = seeds.main(write(params))
    assert (
        third["runs"] == m["runs"]
        and third["stage_wall_time_s"] > 0
        and (own / "train.safetensors").is_file()
    )
    assert all(r["inputs_verified"] for r in third["runs"])
    shutil.rmtree(own)  # a dev set that no longer matches the teacher's is refused before pruning
    params["seeds"]["target_sparsities"] = [0.6]
    (base_data / "eval.safetensors").write_bytes((base_data / "eval.safetensors").read_bytes() + b" ")
    with pytest.raises(RuntimeError, match="differs from the base run's"):
        seeds.main(write(params))


def test_seeds_overrides_must_name_a_listed_sparsity():
    from pipeline.core.params import ParamsError, validate

    ok = {
        "out_dir": "s",
        "seeds": [0],
        "target_sparsities": [0.9, 0.95],
        "overrides": {"95": {"epochs": 16}},
        "reuse": "verified",
    }
    assert validate("seeds", ok) == {"bench": False, **ok}  # an optional key left out takes its default
    with pytest.raises(ParamsError, match=r"seeds.overrides names \['80'\], not in seeds.target_sparsities"):
        validate("seeds", {**ok, "overrides": {"80": {"epochs": 16}}})
    with pytest.raises(ParamsError, match="may not set seed or target_sparsity"):
        validate("seeds", {**ok, "overrides": {"95": {"seed": 3}}})
    with pytest.raises(ParamsError, match="unknown or path key"):
        validate("seeds", {**ok, "overrides": {"95": {"out_dir": "x"}}})
    own = {**ok, "overrides": {"95": {"epochs": 2, "data": {"max_train_samples": None}}}}
    assert validate("seeds", own) == {"bench": False, **own}
    for data in ({"task": "qnli"}, {}, None):
        with pytest.raises(ParamsError, match="data must be a non-empty mapping of max_train_samples, seed"):
            validate("seeds", {**ok, "overrides": {"95": {"data": data}}})
    with pytest.raises(ParamsError, match="unknown or path key"):
        validate("seeds", {**ok, "overrides": {"95": {"data": {"seed": 1}, "out_dir": "x"}}})
