"""A killed training run resumes from its checkpoint instead of restarting, and leaves no output."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline import data, prune, teacher
from pipeline.core.models import load_trained
from tests.conftest import ROOT


def run_until_checkpoint(stage: str, params_path: str, ckpt: Path, timeout: float = 240) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", f"pipeline.{stage}", params_path],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + timeout
    try:
        while not (ckpt / "state.pt").exists():
            assert proc.poll() is None, f"{stage} exited ({proc.returncode}) before its first checkpoint"
            assert time.time() < deadline, "no checkpoint written in time"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


# tail: masks final after step 3 of 24, so the first checkpoint (step 6, an epoch's end) is mid-average
@pytest.mark.parametrize(
    "extra", [{}, {"average_tail": True, "start": 0.0, "end": 0.2}], ids=["plain", "tail"]
)
def test_killed_prune_resumes_to_the_same_model(project, extra):
    """Kill mid-schedule, resume: the student equals one trained without interruption (model, optimizer,
    scheduler, INC pruner state, tail average, step and RNG all restored), and the output dir was never
    half-written."""
    params, write = project
    params["teacher"]["epochs"] = 1
    params["prune"].update(epochs=4, checkpoint_every_steps=2 if not extra else 100, **extra)
    path = write(params)
    data.main(path)
    teacher.main(path)
    straight = prune.main(path)
    want = load_trained(params["prune"]["out_dir"]).state_dict()
    shutil.rmtree(params["prune"]["out_dir"])

    ckpt = Path(params["prune"]["checkpoint_dir"])
    run_until_checkpoint("prune", path, ckpt)
    assert not Path(params["prune"]["out_dir"]).exists()  # killed: nothing half-written
    resumed = prune.main(path)
    assert resumed["resumed_from_step"] > 0 and straight["resumed_from_step"] == 0
    got = load_trained(params["prune"]["out_dir"]).state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want), [
        k for k in want if not torch.equal(want[k], got[k])
    ][:3]
    assert resumed["history"] == straight["history"]
    assert resumed["tail_average"] == straight["tail_average"] and (
        not extra or straight["tail_average"]["steps"] > 0
    )
    assert not ckpt.exists()  # a finished run leaves nothing to resume


def test_checkpoint_from_other_params_is_ignored(project):
    params, write = project
    params["teacher"].update(epochs=6, checkpoint_every_steps=2)
    path = write(params)
    data.main(path)
    run_until_checkpoint("teacher", path, Path(params["teacher"]["checkpoint_dir"]))
    params["teacher"].update(learning_rate=5e-4, epochs=1)
    m = teacher.main(write(params))
    assert m["resumed_from_step"] == 0
