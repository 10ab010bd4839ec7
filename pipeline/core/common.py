"""Shared plumbing for stages: seeding, threads, environment record, atomic outputs, metrics files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import random
import shutil
import time
from importlib import metadata
from pathlib import Path

import numpy as np

_VERSIONED = ("torch", "transformers", "neural-compressor", "numpy", "onnx", "onnxruntime", "openvino", "dvc")


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def physical_cores() -> int:
    """Physical cores, capped by the CPUs this process may run on (containers restrict them)."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        import psutil

        return min(psutil.cpu_count(logical=False) or allowed, allowed)
    except ImportError:
        return allowed


def set_threads(threads: int) -> int:
    """0 means one thread per physical core (shared among a data-parallel run's processes on this
    machine, LOCAL_WORLD_SIZE as torchrun and accelerate launch set it): hyper-threads and
    oversubscribed cores slow GEMM-bound training down."""
    import torch

    n = threads or max(1, physical_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(n)
    return n


def cpu_info() -> dict:
    model, flags = platform.processor(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", "x86_64"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    isa = sorted(
        f for f in flags if f.startswith("amx") or f in ("avx512_vnni", "avx512f", "avx512_bf16", "avx2")
    )
    return {"cpu": model, "logical_cpus": os.cpu_count(), "physical_cores": physical_cores(), "isa": isa}


def env_info(threads: int | None = None) -> dict:
    versions = {}
    for pkg in _VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[pkg] = metadata.version(pkg)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        **cpu_info(),
        "threads": threads,
        "versions": versions,
    }


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(*parts) -> str:
    """A short hash of JSON-able parts: decides whether a checkpoint belongs to this run."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_json(path: str | Path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _jsonable(o):
    """numpy scalars and arrays are written as plain JSON numbers and lists."""
    if isinstance(o, (np.generic, np.ndarray)):
        return o.tolist()
    raise TypeError(f"not JSON-serializable: {type(o).__name__}")


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())


@contextlib.contextmanager
def atomic_dir(final: str | Path):
    """Yield a temp directory beside `final`; it replaces `final` only if the block finishes.

    A crash leaves at most a `.tmp-*` sibling, never a half-written output that DVC would cache.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


DETAILS = "details"  # metrics/details/<stage>.json: everything a stage measured, what reports read


def details_path(metrics_dir: str | Path, stage: str) -> Path:
    return Path(metrics_dir) / DETAILS / f"{stage}.json"


def write_metrics(stage: str, metrics: dict, threads: int | None, metrics_dir: Path, headline: tuple) -> dict:
    """Two files: metrics_dir/details/<stage>.json holds everything, with the environment that produced
    it; metrics_dir/<stage>.json holds only the `headline` keys present (task metrics, deltas, sparsity,
    ratios, wall time), so `dvc metrics show` and `dvc exp show` fit a terminal. Returns the full record."""
    if int(os.environ.get("RANK", "0")):  # set by torchrun / accelerate launch
        raise RuntimeError(
            f"rank {os.environ['RANK']} tried to write metrics/{stage}.json; only rank 0 writes"
        )
    full = {**metrics, "env": env_info(threads)}
    write_json(details_path(metrics_dir, stage), full)
    write_json(Path(metrics_dir) / f"{stage}.json", {k: metrics[k] for k in headline if k in metrics})
    return full


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
