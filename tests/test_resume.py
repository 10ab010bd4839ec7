"""A killed training run resumes from its checkpoint instead of restarting, and leaves no output."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline import data, prune, teacher
from tests.conftest import ROOT


def run_until_checkpoint(stage: str, params_path: str, ckpt: Path, timeout: float = 240) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", f"pipeline.{stage}", params_path], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    try:
        while not (ckpt / "state.pt").exists():
            assert proc.poll() is None, f"{stage} exited ({proc.returncode}) before its first checkpoint"
            assert time.time() < deadline, "no checkpoint written in time"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_killed_prune_resumes(project):
    params, write = project
    params["teacher"]["epochs"] = 1
    params["prune"].update(epochs=6, checkpoint_every_steps=2)
    path = write(params)
    data.main(path)
    teacher.main(path)
    ckpt = Path(params["prune"]["checkpoint_dir"])
    run_until_checkpoint("prune", path, ckpt)
    assert not Path(params["prune"]["out_dir"]).exists()           # killed: nothing half-written
    m = prune.main(path)
    assert m["resumed_from_step"] > 0
    assert abs(m["encoder_linear_sparsity"] - params["prune"]["target_sparsity"]) <= 0.005
    assert [h["epoch"] for h in m["history"]] == list(range(1, 7))


def test_checkpoint_from_other_params_is_ignored(project):
    params, write = project
    params["teacher"]["epochs"] = 1
    path = write(params)
    data.main(path)
    teacher.main(path)                                   # leaves a finished checkpoint behind
    params["teacher"]["learning_rate"] = 5e-4
    m = teacher.main(write(params))
    assert m["resumed_from_step"] == 0
