"""Run every (recipe row, seed) prune of tools/gpu/make_params.py at once, each in its own process, until a
deadline; then stamp the finished runs and let pipeline.seeds summarise them (it reuses them, trains none).

    python tools/gpu/harness.py gpu/mrpc SECONDS
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from pipeline import seeds
from pipeline.core.common import details_path
from pipeline.core.params import load_section
from pipeline.core.runs import write_params

root, budget = Path(sys.argv[1]), float(sys.argv[2])
deadline = time.time() + budget
jobs, docs = [], {}
for cfg in sorted(p.parent for p in root.glob("*/params.yaml")):
    params = cfg / "params.yaml"
    doc, p = yaml.safe_load(params.read_text()), load_section("seeds", params)
    for sparsity in p["target_sparsities"]:
        for seed in p["seeds"]:
            run_dir = Path(p["out_dir"]) / seeds.run_name(sparsity, seed)
            rdoc = seeds.run_doc(doc, sparsity, seed, params.parent, run_dir)
            # progress on for the log (a step rate even if killed); seeds' own params restored after the run
            write_params(
                run_dir / "params.yaml", {**rdoc, "prune": {**rdoc["prune"], "progress": True}}, "seeds"
            )
            docs[run_dir] = rdoc
            log = open(run_dir / "train.log", "w")
            env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
            proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline.prune", str(run_dir / "params.yaml")],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            jobs.append((cfg, seed, run_dir, proc))
print(f"[harness] {len(jobs)} runs started", flush=True)
while any(j[3].poll() is None for j in jobs) and time.time() < deadline:
    time.sleep(5)
for cfg, seed, run_dir, proc in jobs:
    if proc.poll() is None:
        proc.kill()
        print(f"[harness] {run_dir}: killed at the deadline", flush=True)
    else:
        print(f"[harness] {run_dir}: rc {proc.returncode}", flush=True)
finished = {}
for cfg, seed, run_dir, proc in jobs:
    write_params(run_dir / "params.yaml", docs[run_dir], "seeds")
    if proc.returncode == 0 and details_path(run_dir / "metrics", "prune").is_file():
        (run_dir / "inputs.sha256").write_text(seeds.inputs_fingerprint(run_dir / "params.yaml"))
        finished.setdefault(cfg, []).append(seed)
for cfg, done in finished.items():
    params = cfg / "params.yaml"
    doc = yaml.safe_load(params.read_text())
    doc.setdefault("seeds", {})["seeds"] = sorted(done)
    params.write_text(yaml.safe_dump(doc, sort_keys=False))
    seeds.main(str(params))
