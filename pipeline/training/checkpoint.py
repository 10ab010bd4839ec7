"""Resumable training: a checkpoint holds model, optimizer, scheduler, step, RNG and any extra state
(the pruner's). It is reused only when its fingerprint (params, data bytes, training code) matches
the run asking for it, and removed once the stage's output is in place."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from pipeline.core.common import fingerprint, sha256_file

CKPT = "state.pt"


def save_checkpoint(ckpt_dir: Path, state: dict) -> None:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_dir / f".{CKPT}.tmp-{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, ckpt_dir / CKPT)


def load_checkpoint(ckpt_dir: Path, fp: str, remove_stale: bool = True) -> dict | None:
    """The checkpoint if it belongs to this run (same fingerprint); a stale one is removed (by one
    process only, in a data-parallel run: the others pass remove_stale=False)."""
    path = ckpt_dir / CKPT
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != fp:
        if remove_stale:
            print(f"[{ckpt_dir}] checkpoint is from other params or inputs; starting fresh")
            shutil.rmtree(ckpt_dir)
        return None
    return state


def run_fingerprint(stage: str, p: dict, data_dir: Path, *extra) -> str:
    """What a checkpoint must match to be resumed: the stage's params, the tokenized data bytes and
    the training code. Anything else changed means the saved progress belongs to another run."""
    pkg = Path(__file__).resolve().parents[1]  # pipeline/: its stages, core and training
    files = [*pkg.glob("*.py"), *(pkg / "core").rglob("*.py"), *(pkg / "training").rglob("*.py")]
    code = {str(f.relative_to(pkg)): sha256_file(f) for f in sorted(files)}
    data = {s: sha256_file(Path(data_dir) / f"{s}.safetensors") for s in ("train", "eval")}
    return fingerprint(stage, p, data, code, *extra)


def clear_checkpoint(p: dict) -> None:
    """Called once the stage's output is safely in place: a finished run leaves nothing to resume."""
    shutil.rmtree(p["checkpoint_dir"], ignore_errors=True)


class NoExtra:
    """Extra state carried through checkpoints (the pruner uses this)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
