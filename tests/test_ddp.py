"""Data-parallel training on these CPU machines: 2 gloo processes through the real launchers (torchrun
and accelerate launch) for teacher and prune. Both ranks finish, masks agree at every INC update,
the target sparsity is reached, rank 0 alone writes, the loss follows the single-process run with the
same global batch, a desynchronised mask stops the run, and a killed 2-process run resumes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from pipeline import prune
from pipeline.training.schedule import update_steps
from tests.conftest import ROOT

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def accelerate_launch() -> list[str]:
    with socket.socket() as s:  # a free loopback port for the process group's rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Accelerate 1.15 starts several CPU processes only through mpirun (--cpu alone starts one) or its
    # multi_gpu launcher (torchrun underneath); the stage's Accelerator(cpu=True) then runs gloo on the CPU.
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(port),
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def launch(
    launcher: list[str], module: str, params: str, timeout: float = 420
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [*launcher, "-m", module, params], env=env(), capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def ddp_params(params: dict, write, root: Path, name: str) -> str:
    """A params file in its own folder (its own metrics/), sharing data and teacher, writing prune apart."""
    folder = root / name
    folder.mkdir()
    p = {
        **params,
        "prune": {
            **params["prune"],
            "out_dir": str(folder / "student"),
            "checkpoint_dir": str(folder / "ckpt"),
        },
    }
    (folder / "params.yaml").write_text(yaml.safe_dump(p))
    return str(folder / "params.yaml")


def details(params_path: str, stage: str) -> dict:
    return json.loads((Path(params_path).parent / "metrics" / "details" / f"{stage}.json").read_text())


@pytest.fixture
def ddp_trained(trained, tmp_path):
    params, write = trained
    params["prune"].update(pruning_type="snip_momentum", scope="global", mask_updates=4)
    return params, write, tmp_path


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_process_prune_keeps_masks_in_sync_and_follows_one_process(ddp_trained, launcher):
    params, write, root = ddp_trained
    one = prune.main(write(params))
    path = ddp_params(params, write, root, launcher)
    launch(TORCHRUN if launcher == "torchrun" else accelerate_launch(), "pipeline.prune", path)
    two = details(path, "prune")
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["train_device"] == "cpu" and two["train_fallback"] is None
    assert abs(two["achieved_sparsity"] - params["prune"]["target_sparsity"]) <= params["prune"]["tolerance"]
    # an INC mask update and the final weights were each hashed on both ranks and found equal
    updates = len(update_steps(params["prune"], one["steps"]))
    assert two["mask_sync"]["checks"] == one["mask_sync"]["checks"] == updates + 1
    assert two["steps"] == one["steps"]  # batch_size is the global batch: the same schedule
    losses = [(a["train_loss"], b["train_loss"]) for a, b in zip(one["history"], two["history"])]
    assert len(losses) == params["prune"]["epochs"]
    assert all(abs(a - b) <= 0.15 * a for a, b in losses), losses
    assert (Path(path).parent / "student" / "model.safetensors").is_file()


def test_two_process_teacher_writes_once(trained, tmp_path):
    params, write = trained
    folder = tmp_path / "t2"
    folder.mkdir()
    p = {
        **params,
        "teacher": {
            **params["teacher"],
            "out_dir": str(folder / "teacher"),
            "checkpoint_dir": str(folder / "ckpt"),
        },
    }
    (folder / "params.yaml").write_text(yaml.safe_dump(p))
    launch(TORCHRUN, "pipeline.teacher", str(folder / "params.yaml"))
    m = details(str(folder / "params.yaml"), "teacher")
    assert m["world_size"] == 2 and m["steps"] == details(write(params), "teacher")["steps"]
    assert (folder / "teacher" / "quality.json").is_file() and not (folder / "ckpt").exists()


def test_a_rank_with_other_masks_stops_the_run():
    ok = subprocess.run(
        [*TORCHRUN, str(ROOT / "tests" / "ddp_desync.py")],
        env=env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert ok.returncode == 0 and ok.stdout.count("masks in sync") == 2, ok.stderr[-2000:]
    bad = subprocess.run(
        [*TORCHRUN, str(ROOT / "tests" / "ddp_desync.py"), "--desync"],
        env=env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert bad.returncode != 0
    assert "pruning masks differ between ranks after the mask update at step 2" in bad.stderr


def test_a_killed_two_process_prune_resumes(ddp_trained):
    params, write, root = ddp_trained
    params["prune"].update(epochs=4, checkpoint_every_steps=2)
    path = ddp_params(params, write, root, "killed")
    ckpt = Path(params["prune"]["checkpoint_dir"]).parent / "killed_ckpt"
    p = yaml.safe_load(Path(path).read_text())
    p["prune"]["checkpoint_dir"] = str(ckpt)
    Path(path).write_text(yaml.safe_dump(p))
    proc = subprocess.Popen(
        [*TORCHRUN, "-m", "pipeline.prune", path],
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    try:
        while not (ckpt / "state.pt").exists():
            assert proc.poll() is None, f"torchrun exited ({proc.returncode}) before its first checkpoint"
            assert time.time() < deadline, "no checkpoint written in time"
            time.sleep(0.02)
    finally:
        for victim in [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]:
            victim.send_signal(
                signal.SIGKILL
            )  # both ranks (torchrun starts them in sessions of their own), then it
        proc.wait()
    assert not Path(p["prune"]["out_dir"]).exists()
    assert (ckpt / "state.pt").exists(), sorted(ckpt.iterdir())
    out = launch(TORCHRUN, "pipeline.prune", path)
    m = details(path, "prune")
    assert m["resumed_from_step"] > 0 and m["world_size"] == 2, out.stdout[-2000:]
    assert abs(m["achieved_sparsity"] - params["prune"]["target_sparsity"]) <= params["prune"]["tolerance"]
    assert not ckpt.exists()


def test_ddp_throughput_compares_one_and_two_processes_on_the_same_params(trained):
    from tools.diagnostics import ddp_throughput

    params, write = trained
    r = ddp_throughput.main([write(params), "--rounds", "1"])
    assert set(r["median_samples_per_s"]) == {"1", "2"} and all(
        v > 0 for v in r["median_samples_per_s"].values()
    )
    assert r["ratio_n_over_1"] == pytest.approx(
        r["median_samples_per_s"]["2"] / r["median_samples_per_s"]["1"], rel=1e-2
    )
    assert not (Path(write(params)).parent / ".ddp_throughput").exists()
