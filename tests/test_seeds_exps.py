"""Seeds as DVC experiments: `python -m pipeline.seeds --from-exps` over a toy DVC project whose prune stage
writes metrics from its seed and target (no model), queued and run with `dvc exp run`."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pipeline.seeds import check_exps, from_exps

# the toy stage: accuracy and f1 from the seed and target, against a teacher at 0.9 / 0.8
TOY = textwrap.dedent("""\
    import json, pathlib, yaml
    p = yaml.safe_load(open("params.yaml"))["prune"]
    seed, s = p.get("seed", 42), p["target_sparsity"]
    acc, f1 = 0.9 - s / 10 + seed / 100, 0.8 - s / 5 + seed / 50
    m = {"accuracy": acc, "f1": f1, "delta_accuracy": acc - 0.9, "delta_f1": f1 - 0.8, "target_sparsity": s,
         "recipe": "custom", "steps": 10 * p["epochs"], "selection": "last", "achieved_sparsity": s,
         "train_time_s": 1.0, "teacher": {"accuracy": 0.9, "f1": 0.8}}
    pathlib.Path("metrics/details").mkdir(parents=True, exist_ok=True)
    json.dump(m, open("metrics/details/prune.json", "w"))
    json.dump({k: m[k] for k in ("accuracy", "delta_accuracy")}, open("metrics/prune.json", "w"))
    """)
DVC_YAML = textwrap.dedent(f"""\
    stages:
      prune:
        cmd: {sys.executable} prune.py
        deps: [prune.py]
        params: [prune]
        outs:
          - metrics/details/prune.json:
              cache: false
        metrics:
          - metrics/prune.json:
              cache: false
      bench:   # downstream of prune: `dvc exp run prune` leaves it out
        cmd: {sys.executable} -c "open('bench.txt', 'w').write('ran')"
        deps: [metrics/prune.json]
        outs: [bench.txt]
    """)
SEEDS, SPARSITIES = (0, 1, 2), (0.9, 0.95)


def toy_accuracy(seed: int, s: float) -> float:
    return 0.9 - s / 10 + seed / 100


def sh(repo: Path, *args: str) -> str:
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    proc = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(args)}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


def dvc(repo: Path, *args: str) -> str:
    return sh(repo, sys.executable, "-m", "dvc", *args)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("toy")
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "config", "user.name", "kasp test")
    sh(repo, "git", "config", "user.email", "kasp@example.invalid")
    dvc(repo, "init", "-q")
    (repo / "params.yaml").write_text("prune:\n  target_sparsity: 0.0\n  epochs: 3\n")
    (repo / "prune.py").write_text(TOY)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "toy")
    # `+` adds a key params.yaml lacks, `++` adds or overrides; a comma list sweeps (3 x 2 = 6 experiments)
    dvc(
        repo,
        "exp",
        "run",
        "--queue",
        "prune",
        "-S",
        "++prune.seed=0,1,2",
        "-S",
        "prune.target_sparsity=0.9,0.95",
    )
    dvc(repo, "exp", "run", "--run-all")
    return repo


def experiment_names(repo: Path) -> list[str]:
    rows = json.loads(dvc(repo, "exp", "show", "--json"))
    return [e["name"] for row in rows for e in row.get("experiments") or []]


@pytest.mark.slow
def test_seeds_from_dvc_experiments(toy):
    assert len(experiment_names(toy)) == 6
    assert not (toy / "bench.txt").exists()
    dvc(toy, "exp", "run", "--queue", "prune", "-S", "++prune.seed=3", "-S", "prune.target_sparsity=0.9")
    m = from_exps(str(toy / "params.yaml"))
    assert json.loads((toy / "metrics" / "seeds.json").read_text())["summary"] == m["summary"]
    assert sorted((r["target_sparsity"], r["seed"]) for r in m["runs"]) == [
        (s, x) for s in SPARSITIES for x in SEEDS
    ]
    assert all(
        r["experiment"] and r["rev"] and r["train_rows"] == "base" and r["steps"] == 30 for r in m["runs"]
    )
    assert [(x["seed"], x["state"]) for x in m["missing"]] == [
        (3, "Queued")
    ]  # queued: reported, not summarised
    assert m["per_sparsity"] == {}
    for s in SPARSITIES:
        want = np.array([toy_accuracy(x, s) for x in SEEDS])
        got = m["summary"][f"{s:g}"]
        assert got["n"] == 3
        assert got["accuracy"]["mean"] == pytest.approx(want.mean(), abs=1e-6)
        assert got["accuracy"]["std"] == pytest.approx(want.std(ddof=1), abs=1e-6)
        assert got["delta_accuracy"]["mean"] == pytest.approx(want.mean() - 0.9, abs=1e-6)
    dvc(
        toy,
        "exp",
        "run",
        "--queue",
        "prune",
        "-S",
        "++prune.seed=4",
        "-S",
        "prune.target_sparsity=0.9",
        "-S",
        "+prune.learning_rate=0.001",
    )
    with pytest.raises(
        RuntimeError,
        match=r"at prune.target_sparsity = 0.9 differ in more than prune.seed: "
        r"prune.learning_rate",
    ):
        from_exps(str(toy / "params.yaml"))
    dvc(toy, "queue", "remove", "--all")


def flat(seed, sparsity, **extra) -> dict:
    return {
        "prune.seed": seed,
        "prune.target_sparsity": sparsity,
        "prune.epochs": 3,
        "data.task": "mrpc",
        **extra,
    }


def test_a_sparsity_may_have_its_own_prune_keys():
    docs = {
        "a": flat(0, 0.9),
        "b": flat(1, 0.9),
        "c": {**flat(0, 0.95), "prune.epochs": 16},
        "d": {**flat(1, 0.95), "prune.epochs": 16},
    }
    assert check_exps(docs) == {"prune.epochs": {"0.9": 3, "0.95": 16}}


def test_experiments_differing_outside_prune_are_refused():
    docs = {"a": flat(0, 0.9), "b": flat(1, 0.95, **{"data.task": "sst2"})}
    with pytest.raises(
        RuntimeError,
        match=r"outside prune.seed and prune.target_sparsity: data.task: mrpc \(a\) "
        r"/ sst2 \(b\)",
    ):
        check_exps(docs)


def test_a_key_absent_in_one_experiment_is_a_difference():
    docs = {"a": flat(0, 0.9), "b": {**flat(1, 0.9), "prune.extra": 1}}
    with pytest.raises(RuntimeError, match=r"prune.extra: <absent> \(a\) / 1 \(b\)"):
        check_exps(docs)


def test_not_a_dvc_project(tmp_path):
    (tmp_path / "params.yaml").write_text("prune: {}\n")
    with pytest.raises(RuntimeError, match="not the params file at the root of a DVC project"):
        from_exps(str(tmp_path / "params.yaml"))
