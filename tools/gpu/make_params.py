"""Write gpu/mrpc/params.yaml (data, teacher: the MRPC profile's) and one folder per recipe row, each a
seeds base whose data and teacher are the shared ones. Differences from the profile, all for the GPU:
live teacher (no host cache), no mid-epoch checkpoints, one CPU thread per process (12 share 16 cores)."""

import copy
import os
import sys
from pathlib import Path

import yaml

from pipeline.core.params import validated

profile = yaml.safe_load(Path("profiles/mrpc/params.yaml").read_text())  # a diff from the defaults
root = Path(sys.argv[1] if len(sys.argv) > 1 else "gpu/mrpc")
epochs_scale = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0  # local dry run: a sliver of each recipe
max_train = int(sys.argv[3]) if len(sys.argv) > 3 else None
base = {k: validated(profile, k) for k in ("data", "teacher", "prune", "seeds")}  # every key, defaults in
base["data"].update(model="gpu/model", glue_dir="../glue", max_train_samples=max_train)
base["teacher"].update(epochs=max(1, round((base["teacher"]["epochs"] or 3) * epochs_scale)))
base["prune"].update(
    teacher_cache_mb=0, checkpoint_every_steps=100000, threads=1, allow_weak_teacher=epochs_scale < 1
)
ROWS = {  # name: (target, prune keys)
    "s90": (0.9, {"epochs": 12}),
    "c16": (0.95, {"epochs": 16}),
    "c40": (0.95, {"epochs": 40}),
    "aug4": (0.95, {"epochs": 8, "augment_copies": 4}),
}
only = [r for r in os.environ.get("ROWS", "").split(",") if r]  # a dry run's subset
seeds = [int(x) for x in os.environ.get("SEEDS", "0,1,2").split(",")]
ROWS = {k: v for k, v in ROWS.items() if not only or k in only}
root.mkdir(parents=True, exist_ok=True)
(root / "params.yaml").write_text(yaml.safe_dump({k: base[k] for k in ("data", "teacher")}, sort_keys=False))
for name, (target, keys) in ROWS.items():
    doc = copy.deepcopy(base)
    doc["data"].update(out_dir="../data/tokenized", glue_dir="../../glue")
    doc["teacher"].update(out_dir="../models/teacher", checkpoint_dir="../checkpoints/teacher")
    keys = {**keys, "epochs": max(1, round(keys["epochs"] * epochs_scale))}
    doc["prune"].update(target_sparsity=target, **keys)
    doc["seeds"].update(out_dir="seeds", seeds=seeds, target_sparsities=[target], overrides={})
    (root / name).mkdir(exist_ok=True)
    (root / name / "params.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
print("wrote", root, list(ROWS))
