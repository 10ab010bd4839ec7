"""Prune-step throughput of one process against N data-parallel processes, on the same params, in one
run: the launches alternate (1, N, 1, N, ...) so drift on the machine hits both alike, and the result
is the ratio of the median `train_samples_per_s` each launch's metrics/prune.json records (training
steps only: no start-up, cache build or evaluation).

    python -m tools.diagnostics.ddp_throughput params.yaml [--nproc 2] [--rounds 2] [--out FILE]

Each launch writes under a scratch folder beside the params file (`.ddp_throughput/`, removed after).
A benchmark, not a test: run it on a quiet machine; the CPU is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.core.common import cpu_info, write_json


def launch_cmd(nproc: int, params: Path) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "pipeline.prune", str(params)]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "pipeline.prune",
        str(params),
    ]


def scratch_params(base: Path, scratch: Path, nproc: int) -> Path:
    """The base params with prune writing into scratch/<nproc>/ and every other path made absolute."""
    from pipeline.core.runs import relocate

    doc = yaml.safe_load(base.read_text())
    folder = scratch / str(nproc)
    folder.mkdir(parents=True, exist_ok=True)
    out = {
        s: relocate(s, v, base.parent.resolve(), folder.resolve())
        for s, v in doc.items()
        if s in ("data", "teacher")
    }
    prune = dict(doc["prune"], out_dir="student", checkpoint_dir="ckpt", progress=False)
    out["prune"] = relocate("prune", prune, folder, folder)
    (folder / "params.yaml").write_text(yaml.safe_dump(out, sort_keys=False))
    return folder / "params.yaml"


def run(base: Path, nproc: int, rounds: int) -> dict:
    scratch = base.parent / ".ddp_throughput"
    got = {1: [], nproc: []}
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    try:
        for _ in range(rounds):
            for n in (1, nproc):
                params = scratch_params(base, scratch, n)
                subprocess.run(launch_cmd(n, params), env=env, check=True, capture_output=True)
                m = json.loads((params.parent / "metrics" / "details" / "prune.json").read_text())
                got[n].append(m["train_samples_per_s"])
                shutil.rmtree(params.parent / "student", ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    med = {n: statistics.median(v) for n, v in got.items()}
    return {
        "cpu": cpu_info()["cpu"],
        "logical_cpus": os.cpu_count(),
        "nproc": nproc,
        "rounds": rounds,
        "train_samples_per_s": {str(n): v for n, v in got.items()},
        "median_samples_per_s": {str(n): v for n, v in med.items()},
        "ratio_n_over_1": round(med[nproc] / med[1], 3),
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("params")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    result = run(Path(a.params), a.nproc, a.rounds)
    if a.out:
        write_json(a.out, result)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
