"""Stage `seeds`: one prune recipe over several seeds and sparsities, summarised as mean, std, min, max.

    python -m pipeline.seeds [params.yaml]          # reads the `seeds` section (and the base prune section)
    python -m pipeline.seeds --from-exps [params.yaml]   # the root project's seeds run as DVC experiments

The root project runs its seeds as DVC experiments (`dvc exp run --queue prune -S 'prune.speedup=null'
-S '++prune.seed=0,1,2' -S 'prune.target_sparsity=0.9,0.95'`, `dvc queue start`): DVC reruns only prune,
`dvc exp show` lists them, and --from-exps summarises them into the same metrics/seeds.json. Profiles
(params files DVC does not know) and seeds.overrides' own distillation rows use the runs below.

MRPC dev has 408 pairs, so one pair is 0.25 accuracy points and a single seed's difference under about
a point is noise: an accuracy claim is a mean over seeds. Each run (a target sparsity and a seed) gets
seeds.out_dir/<sparsity>-s<seed>/ with a generated params.yaml: data and teacher point at the base run's
outputs (the teacher is trained once, by the base run, and shared by every run), prune writes inside
the folder with that seed and target. seeds.overrides may give one sparsity's runs their own
distillation rows (`data: {max_train_samples: null}`: the student distils on more text than the teacher
was tuned on); each such run tokenizes them in its folder first, with the base run's task and dev set.
A finished run is reused while its params, the data, the teacher's weights and the code are those it
was trained with, so an interrupted set of seeds picks up where it stopped. Output: metrics/seeds.json
(every run, the summary per sparsity) and metrics/details/seeds.json.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import yaml

from pipeline.core.common import Timer, details_path, read_json, sha256_file, write_metrics
from pipeline.core.exps import describe, differing, effective, experiments, repo_root
from pipeline.core.params import (
    ParamsError,
    load_section,
    metrics_dir,
    percent,
    percent_key,
    upstream_dir,
    validate,
    validated,
)
from pipeline.core.runs import relocate, run_stage, write_params
from pipeline.core.schema import STUDENT_DATA
from pipeline.core.tasks import SCORES

SHARED = ("data", "teacher")  # the base run's outputs, never retrained by a seed
OWN_DATA = (
    "data/tokenized"  # a run with its own distillation rows (seeds.overrides' data) tokenizes them here
)
KEYS = (*SCORES, *(f"delta_{k}" for k in SCORES))
LAST = tuple(f"last_step_{k}" for k in KEYS)  # with prune.average_tail: the same run's last-step weights
UNCALIBRATED = tuple(f"uncalibrated_{k}" for k in KEYS)  # with prune.calibrate: the same run before its shift
SPEED = ("speedup_vs_teacher_shipped_x", "speedup_vs_teacher_shipped_b1_x")  # with seeds.bench


def run_name(sparsity: float, seed: int) -> str:
    return f"{percent(sparsity)}-s{seed}"


def sparsity_overrides(overrides: dict, sparsity: float) -> dict:
    """seeds.overrides' prune keys for this target (keys are percent, as YAML may read them as numbers)."""
    return next((dict(x) for k, x in overrides.items() if percent_key(k) == percent(sparsity)), {})


def run_doc(doc: dict, sparsity: float, seed: int, base_dir: Path, run_dir: Path) -> dict:
    """The params of one run: the base prune section with this target's overrides, this seed and
    target, writing in run_dir. An override's `data` keys give the run its own tokenized train rows
    (in run_dir/OWN_DATA); the teacher and the dev set stay the base run's."""
    out = {s: relocate(s, validated(doc, s), base_dir, run_dir) for s in SHARED}
    prune = relocate("prune", validated(doc, "prune"), base_dir, base_dir, inside=True)
    extra = sparsity_overrides(validated(doc, "seeds")["overrides"], sparsity)
    if data := extra.pop("data", None):
        try:
            own = validate("data", {**(doc.get("data") or {}), **data})
        except ParamsError as e:
            raise ParamsError(f"seeds.overrides[{percent(sparsity)!r}].data: {e}") from None
        out["data"] = {**relocate("data", own, base_dir, run_dir), "out_dir": OWN_DATA}
    out["prune"] = validate(
        "prune", {**prune, **extra, "seed": seed, "target_sparsity": sparsity, "progress": False}
    )
    # a speed target (prune.speedup) is met at deploy's shapes: the base file's, stated or default
    out["deploy"] = relocate("deploy", validated(doc, "deploy"), base_dir, run_dir)
    return out


def owns_data(rdoc: dict) -> bool:
    return rdoc["data"]["out_dir"] == OWN_DATA


def run_record(m: dict, seed: int, rdoc: dict, verified: bool) -> dict:
    """What seeds.json keeps of one run's metrics/prune.json. inputs_verified is false for a run reused
    on its params alone (seeds.reuse: params): its data, teacher and code were not checked. train_rows
    is the base run's data unless the run distilled on rows of its own (max_train_samples null: all)."""
    rows = {k: rdoc["data"][k] for k in STUDENT_DATA} if owns_data(rdoc) else "base"
    return record(m, seed, rows, rdoc["prune"]["epochs"], verified)


def record(m: dict, seed: int, rows: dict | str, epochs: int | None, verified: bool) -> dict:
    """One run's record from its prune details (m); epochs: the params' (m's own when it states them)."""
    return {
        "seed": seed,
        "target_sparsity": m["target_sparsity"],
        "recipe": m["recipe"],
        "epochs": m.get("epochs", epochs),
        "steps": m["steps"],
        "train_rows": rows,
        **{k: m[k] for k in KEYS if k in m},
        **paired(m, "tail_average", "last_step_scores", "last_step"),
        **paired(m, "calibration", "uncalibrated_scores", "uncalibrated"),
        "selection": m["selection"],
        "achieved_sparsity": m["achieved_sparsity"],
        "train_time_s": m["train_time_s"],
        "inputs_verified": verified,
    }


def paired(m: dict, section: str, key: str, prefix: str) -> dict:
    """A run's paired control (an averaged run's last step, a calibrated run before its shift): its
    scores and deltas against the same teacher, as prefix_<metric> and prefix_delta_<metric>."""
    scores = (m.get(section) or {}).get(key)
    if not scores:
        return {}
    return {
        **{f"{prefix}_{k}": v for k, v in scores.items()},
        **{f"{prefix}_delta_{k}": round(v - m["teacher"][k], 6) for k, v in scores.items()},
    }


def summarize(runs: list[dict]) -> dict:
    """Per target sparsity: n and mean, std (sample), min, max of every task metric and delta."""
    out = {}
    for s in sorted({r["target_sparsity"] for r in runs}):
        rs = [r for r in runs if r["target_sparsity"] == s]
        stats = {"n": len(rs)}
        for k in KEYS + LAST + UNCALIBRATED + SPEED:
            v = np.array([r[k] for r in rs if r.get(k) is not None], np.float64)
            if len(v):
                stats[k] = {
                    "mean": round(float(v.mean()), 6),
                    "std": round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 6),
                    "min": round(float(v.min()), 6),
                    "max": round(float(v.max()), 6),
                }
        out[f"{s:g}"] = stats
    return out


def print_summary(summary: dict) -> None:
    for s, st in summary.items():
        print(
            f"[seeds] {s}: "
            + ", ".join(
                f"{k} {st[k]['mean']:+.4f} ± {st[k]['std']:.4f}" for k in st if k.startswith("delta_")
            )
            + f" over {st['n']} seeds"
        )


def inputs_fingerprint(params: Path) -> str:
    """What a finished run must still match to be reused: its prune params, the tokenized data, the
    teacher's weights and the code (the same fingerprint a prune checkpoint carries)."""
    from pipeline.core.models import weights_sha256
    from pipeline.training.checkpoint import run_fingerprint

    prune, data_dir = load_section("prune", params), upstream_dir("data", params)
    return run_fingerprint("prune", prune, data_dir, weights_sha256(str(upstream_dir("teacher", params))))


def reusable(params: Path, stamp: Path, done: Path, rdoc: dict, reuse: str) -> bool | None:
    """True: finished with these params and the same inputs (stamp); False: finished with these params
    and no stamp (a fresh clone), inputs not checked, only with reuse: params; None: run it. A stamp
    that no longer matches (teacher retrained, code changed) always means run it."""
    same = params.is_file() and yaml.safe_load(params.read_text()) == rdoc
    if not (done.is_file() and same):
        return None
    if stamp.is_file():
        return True if stamp.read_text() == inputs_fingerprint(params) else None
    return False if reuse == "params" else None


def check_dev(params: Path, base_data: Path) -> None:
    """A run with its own train rows must score on the base run's dev set byte for byte: the teacher's
    figures it is compared with came from that set (the raw files may have changed since)."""
    own = upstream_dir("data", params) / "eval.safetensors"
    if sha256_file(own) != sha256_file(base_data / "eval.safetensors"):
        raise RuntimeError(
            f"{params}: its own data stage wrote a dev set ({own}) that differs from the base "
            f"run's ({base_data / 'eval.safetensors'}); rerun the base data and teacher stages"
        )


def tokenize_own(params: Path, run: str, base_data: Path) -> float:
    seconds = run_stage("data", params, run, by="seeds")
    check_dev(params, base_data)
    return seconds


def one_run(doc: dict, sparsity: float, seed: int, p: dict, params_path: str) -> tuple[dict, float]:
    run_dir = Path(p["out_dir"]) / run_name(sparsity, seed)
    params, stamp = run_dir / "params.yaml", run_dir / "inputs.sha256"
    rdoc = run_doc(doc, sparsity, seed, Path(params_path).parent, run_dir)
    done = details_path(run_dir / "metrics", "prune")
    own, base_data, seconds = owns_data(rdoc), upstream_dir("data", params_path), 0.0
    retokenize = (
        own
        and stamp.is_file()
        and not (run_dir / OWN_DATA / "train.safetensors").is_file()
        and yaml.safe_load(params.read_text()) == rdoc
    )  # its data folder is not kept: tokenize, then check the stamp
    if retokenize:
        seconds += tokenize_own(params, run_name(sparsity, seed), base_data)
    verified = reusable(params, stamp, done, rdoc, p["reuse"])
    write_params(params, rdoc, "seeds")
    if verified is None:
        stamp.unlink(missing_ok=True)
        if own and not retokenize:
            seconds += tokenize_own(params, run_name(sparsity, seed), base_data)
        seconds += run_stage("prune", params, run_name(sparsity, seed), by="seeds")
        stamp.write_text(inputs_fingerprint(params))
        verified = True
    return run_record(read_json(done), seed, rdoc, verified), seconds


BENCH_STAGES = ("export", "compile", "bench")
BENCH_BACKENDS = ["torch-fp32", "ort-int8", "ov-int8", "ov-int8-dense"]


def bench_doc(doc: dict, run_dir: Path, base_dir: Path) -> dict:
    """A run's params with export, compile and bench of the teacher and its student inside its folder:
    the INT8 backends a student ships on and the PyTorch FP32 baseline, at deploy.shape and at batch 1."""
    rdoc = yaml.safe_load((run_dir / "params.yaml").read_text())
    d = validated(doc, "deploy")
    sections = {s: relocate(s, validated(doc, s), base_dir, base_dir, inside=True) for s in BENCH_STAGES}
    sections["export"]["models"] = sections["compile"]["models"] = ["teacher", "student"]
    sections["bench"].update(
        models=["teacher", "student"],
        backends=BENCH_BACKENDS,
        crosscheck_shapes=[],
        batch_sizes=sorted({d["shape"][0], 1}),
        seq_lens=sorted({d["shape"][1], d["latency_tokens"]}),
    )
    return {**rdoc, **sections}


def speed_record(bench: dict, deploy: dict) -> dict:
    """What seeds.json keeps of a run's bench: the student's speed-up over the teacher per backend at
    deploy.shape and at [1, deploy.latency_tokens], and on its fastest backend at deploy.shape (what
    `deploy.target: auto` ships when eval finds it within tolerance)."""
    b, s = deploy["shape"]
    shapes = (f"b{b}xs{s}", f"b1xs{deploy['latency_tokens']}")
    ratios = {k: {x: v[x] for x in shapes if x in v} for k, v in bench["speedup_vs_teacher_x"].items()}
    student = [
        r for r in bench_rows(bench) if r["model"] == "student" and (r["batch"], r["seq_len"]) == (b, s)
    ]
    fastest = max(student, key=lambda r: r["throughput_seq_per_s"])["backend"]
    return {
        "speedup_vs_teacher_x": ratios,
        "speed_backend": fastest,
        "speedup_vs_teacher_shipped_x": ratios[fastest][shapes[0]],
        "speedup_vs_teacher_shipped_b1_x": ratios[fastest].get(shapes[1]),
        "bench_cpu": bench["cpu"],
    }


def bench_rows(bench: dict) -> list[dict]:
    return [r for r in bench["results"] if r["streams"] == 1]


def bench_runs(doc: dict, runs: list[dict], p: dict, params_path: str) -> float:
    """export, compile and bench in every run's folder, one after another once all have trained, so no
    timing runs beside training; adds each run's speed record. Returns the stages' wall seconds."""
    base_dir, seconds = Path(params_path).parent, 0.0
    deploy = validated(doc, "deploy")
    for r in runs:
        name = run_name(r["target_sparsity"], r["seed"])
        run_dir = Path(p["out_dir"]) / name
        params = run_dir / "params.yaml"
        write_params(params, bench_doc(doc, run_dir, base_dir), "seeds")
        for stage in BENCH_STAGES:
            seconds += run_stage(stage, params, name, by="seeds")
        r.update(speed_record(read_json(details_path(run_dir / "metrics", "bench")), deploy))
    return seconds


def main(params_path: str = "params.yaml") -> dict:
    p = load_section("seeds", params_path)
    doc = yaml.safe_load(Path(params_path).read_text())
    base = load_section("teacher", params_path)
    runs, stage_s = [], 0.0
    for sparsity in p["target_sparsities"]:  # every run's params are valid before any run trains
        run_doc(doc, sparsity, p["seeds"][0], Path(params_path).parent, Path(p["out_dir"]) / "check")
    with Timer() as t:
        for sparsity in p["target_sparsities"]:
            for seed in p["seeds"]:
                record, seconds = one_run(doc, sparsity, seed, p, params_path)
                runs.append(record)
                stage_s += seconds
        if p["bench"]:
            stage_s += bench_runs(doc, runs, p, params_path)
    summary = summarize(runs)
    print_summary(summary)
    return write_metrics(
        "seeds",
        {
            "teacher": f"once: the base run's ({base['out_dir']}, seed {base['seed']})",
            "runs": runs,
            "summary": summary,
            "stage_wall_time_s": round(stage_s, 2),
            "wall_time_s": round(t.seconds, 2),
        },
        None,
        metrics_dir(params_path),
        ("teacher", "runs", "summary", "wall_time_s"),
    )


VARIED = ("prune.seed", "prune.target_sparsity")  # what seed experiments differ in (--from-exps)
QUEUE = (
    "dvc exp run --queue prune -S 'prune.speedup=null' -S '++prune.seed=0,1,2' "
    "-S 'prune.target_sparsity=0.9,0.95'"
)  # the root params.yaml's speed target planned no sparsity


def from_exps(params_path: str = "params.yaml") -> dict:
    """metrics/seeds.json from the DVC experiments of HEAD (QUEUE, then `dvc queue start`): each
    finished one is a run, named by its experiment and rev; one
    not finished (queued, running, failed) is listed under `missing`. Refused unless the experiments at one
    sparsity differ only in prune.seed, and those at different sparsities only in prune keys (a sparsity's
    own recipe, as seeds.overrides gives it, recorded in `per_sparsity`); a seed twice at one sparsity too."""
    root = repo_root(params_path)
    params = Path(params_path).resolve()
    details = details_path(metrics_dir(params), "prune").relative_to(root).as_posix()
    with Timer() as t:
        exps = experiments(root, params.relative_to(root).as_posix(), details)
    if not exps:
        raise RuntimeError(
            f"{params_path}: no DVC experiment of HEAD; queue the seeds with `{QUEUE}`, "
            "then `dvc queue start`. Experiments belong to the commit they were queued from: "
            "`dvc exp show -n 5` lists older commits' (check that commit out to summarize them)"
        )
    flat = {e["experiment"]: effective(e["params"]) for e in exps}
    per_sparsity = check_exps(flat)
    runs = [exp_run(e, flat[e["experiment"]]) for e in exps if e["metrics"] is not None]
    missing = [
        {
            "experiment": e["experiment"],
            "rev": e["rev"],
            "state": e["state"],
            **{k.split(".")[1]: flat[e["experiment"]][k] for k in VARIED},
        }
        for e in exps
        if e["metrics"] is None
    ]
    return write_exps(params, runs, missing, per_sparsity, t.seconds)


def check_exps(flat: dict[str, dict]) -> dict:
    """Refuse experiments that are not seeds of one recipe (see from_exps); the prune keys that differ
    between sparsities, as {key: {sparsity: value}}."""
    outside = {k: v for k, v in differing(flat, VARIED).items() if not k.startswith("prune.")}
    if outside:
        raise RuntimeError(
            "DVC experiments differ outside prune.seed and prune.target_sparsity: "
            f"{describe(outside)}; remove the odd ones (`dvc exp remove NAME`, "
            "`dvc queue remove --failed`) or summarise them apart"
        )
    groups: dict[float, dict[str, dict]] = {}
    for name, d in flat.items():
        groups.setdefault(d["prune.target_sparsity"], {})[name] = d
    for sparsity, docs in groups.items():
        if inside := differing(docs, VARIED):
            raise RuntimeError(
                f"DVC experiments at prune.target_sparsity = {sparsity:g} differ in more than "
                f"prune.seed: {describe(inside)}; remove the odd ones (`dvc exp remove NAME`)"
            )
    keys = differing(flat, VARIED)
    return {k: {f"{s:g}": next(iter(docs.values()))[k] for s, docs in sorted(groups.items())} for k in keys}


def exp_run(e: dict, flat: dict) -> dict:
    """One finished experiment's run record; its prune details must be its own (the stage ran)."""
    m, seed, sparsity = e["metrics"], flat["prune.seed"], flat["prune.target_sparsity"]
    if m.get("target_sparsity") != sparsity:
        raise RuntimeError(
            f"DVC experiment {e['experiment']} ({e['rev']}): its metrics/details/prune.json "
            f"says target_sparsity {m.get('target_sparsity')}, its params {sparsity}; the prune "
            "stage did not run in it (`dvc exp run --queue prune ...` runs prune and its inputs)"
        )
    return {
        "experiment": e["experiment"],
        "rev": e["rev"],
        **record(m, seed, "base", flat["prune.epochs"], True),
    }


def write_exps(
    params: Path, runs: list[dict], missing: list[dict], per_sparsity: dict, seconds: float
) -> dict:
    count = Counter((r["target_sparsity"], r["seed"]) for r in runs)
    if twice := [r for r in runs if count[r["target_sparsity"], r["seed"]] > 1]:
        raise RuntimeError(
            "DVC experiments repeat a seed at one sparsity ("
            + ", ".join(f"{r['experiment']}: seed {r['seed']} at {r['target_sparsity']:g}" for r in twice)
            + "); a mean counts each seed once: `dvc exp remove` the extra ones"
        )
    if not runs:
        raise RuntimeError(
            "no DVC experiment of HEAD has finished: "
            + ", ".join(f"{x['experiment']} ({x['state']})" for x in missing)
            + "; run them with `dvc queue start`"
        )
    for x in missing:
        print(
            f"[seeds] missing: {x['experiment']} ({x['rev']}, {x['state']}): seed {x['seed']} at "
            f"{x['target_sparsity']:g} has no prune metrics and is not in the summary",
            flush=True,
        )
    summary = summarize(runs)
    print_summary(summary)
    teacher = "the experiments' shared data and teacher stages (dvc exp)"
    return write_metrics(
        "seeds",
        {
            "source": "dvc exp",
            "teacher": teacher,
            "runs": runs,
            "missing": missing,
            "per_sparsity": per_sparsity,
            "summary": summary,
            "wall_time_s": round(seconds, 2),
        },
        None,
        metrics_dir(params),
        ("source", "runs", "missing", "summary", "wall_time_s"),
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--from-exps"]:
        from_exps(*sys.argv[2:])
    else:
        main(*sys.argv[1:])
