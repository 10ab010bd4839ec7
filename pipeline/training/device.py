"""Where training runs: device and precision (asked for in params, checked before any model loads),
and the processes of a data-parallel run, through HF Accelerate.

The same stage runs under `python -m pipeline.prune`, `torchrun --nproc_per_node N -m pipeline.prune`
and `accelerate launch -m pipeline.prune`: Accelerate reads the launcher's environment, starts the
process group (gloo on CPUs, NCCL on GPUs) and wraps the model in DDP. `batch_size` is the global
batch: every step, each rank takes its share of one length-grouped batch, so a recipe's step count,
its learning-rate schedule and INC's pruning steps are the same at any number of processes.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import torch

from pipeline.core.common import cpu_info

# CPU flags of native bf16 matmul kernels; without them oneDNN emulates bf16, slower than fp32.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
MIXED = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}  # params precision -> Accelerate's mixed_precision


class PrecisionError(ValueError):
    """Asked-for device or precision this machine cannot give, and no fallback allowed."""


@dataclass(frozen=True)
class Placement:
    device: str  # cpu | cuda: what runs
    precision: str  # fp32 | bf16 | fp16: what runs
    asked: str  # "<device>/<precision>" as the params asked
    fallback: str | None  # why what runs differs from what was asked (only with allow_fallback)

    def record(self) -> dict:
        return {f"train_{k}": v for k, v in asdict(self).items()}


def _cuda_problem(precision: str, cuda: bool) -> tuple[str, str] | None:
    """(what is missing, the key to fall back on) for a CUDA run, or None."""
    if not cuda:
        return "no CUDA device is visible (torch.cuda.is_available() is False)", "device"
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        return f"bf16 needs an Ampere or newer GPU; {torch.cuda.get_device_name()} has none", "precision"
    return None


def _cpu_problem(precision: str, isa) -> tuple[str, str] | None:
    if precision == "fp16":
        return "fp16 mixed precision is a GPU feature; CPUs train in fp32 or bf16", "precision"
    if precision == "bf16" and not any(f in isa for f in BF16_FLAGS):
        return (
            f"bf16 needs a CPU with one of {', '.join(BF16_FLAGS)}; this one ({cpu_info()['cpu']}) has "
            f"{', '.join(isa) or 'none of them'}",
            "precision",
        )
    return None


def resolve(p: dict, isa=None, cuda: bool | None = None) -> Placement:
    """What will run for a section's device / precision / allow_fallback, decided before any model
    loads. Without allow_fallback, anything this machine lacks is an error that names the key; with it,
    the fallback (CPU for CUDA, fp32 for bf16/fp16) runs and is recorded, never silently."""
    isa = cpu_info()["isa"] if isa is None else isa
    cuda = torch.cuda.is_available() if cuda is None else cuda
    dev, prec, why = p["device"], p["precision"], []
    if dev == "auto":
        dev = "cuda" if cuda else "cpu"
    for check in (
        lambda: dev == "cuda" and _cuda_problem(prec, cuda),
        lambda: dev == "cpu" and _cpu_problem(prec, isa),
    ):
        if not (found := check()):
            continue
        problem, key = found
        if not p["allow_fallback"]:
            fix = "device: cpu" if key == "device" else "precision: fp32"
            raise PrecisionError(
                f"device: {p['device']}, precision: {p['precision']}: {problem}; set {fix} "
                "(or allow_fallback: true to run what this machine has, recorded in the metrics)"
            )
        why.append(problem)
        dev, prec = ("cpu", prec) if key == "device" else (dev, "fp32")
    return Placement(dev, prec, f"{p['device']}/{p['precision']}", "; ".join(why) or None)


def accelerator(placement: Placement):
    """Accelerate's handle for this run: device placement, autocast and the process group."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # Accelerate keeps one mixed precision and one device per process; a process may run several stages
    # (the tests, step_profile), so that state is reset, and with it a single process's PartialState,
    # which would otherwise keep an earlier stage's device (a CPU stage, then `device: cuda`). A live
    # process group (torchrun, accelerate launch) is kept: it cannot be started twice.
    group = torch.distributed.is_available() and torch.distributed.is_initialized()
    AcceleratorState._reset_state(reset_partial_state=not group)
    acc = Accelerator(cpu=placement.device == "cpu", mixed_precision=MIXED[placement.precision])
    if (
        acc.device.type != placement.device
    ):  # e.g. `accelerate launch --cpu` (ACCELERATE_USE_CPU) with device: cuda
        raise PrecisionError(
            f"device: {placement.device} was asked for, but the launcher placed this process on "
            f"{acc.device.type}; drop the launcher's --cpu or set device: cpu"
        )
    return acc


def setup(p: dict, section: str):
    """(placement, accelerator) for a training section, checked before any model loads."""
    placement = resolve(p)
    acc = accelerator(placement)
    check_world(p["batch_size"], acc.num_processes, f"{section}.batch_size")
    return placement, acc


def finish(acc, result: dict | None = None) -> dict:
    """End of a stage on every rank: wait for rank 0's writes, then leave the process group (a gloo
    group left to interpreter shutdown can abort the process, failing a run that had finished).
    Returns what another rank's main() returns: its rank and training history."""
    if acc.num_processes > 1:
        acc.wait_for_everyone()
        acc.end_training()
    return {"rank": acc.process_index, "history": (result or {}).get("history")}


def shard(idx, rank: int, world: int):
    """This rank's rows of one global batch. A batch smaller than the world (the last one) repeats rows,
    so no rank runs a step without data and every rank takes the same number of steps."""
    if world == 1:
        return idx
    if len(idx) < world:
        return [idx[rank % len(idx)]]
    return idx[rank::world]


def check_world(batch_size: int, world: int, key: str) -> None:
    if batch_size % world:
        raise PrecisionError(
            f"{key} = {batch_size} is the global batch and must divide evenly among the "
            f"{world} processes; use a multiple of {world}"
        )


def masks_digest(masks: dict) -> str:
    """One hash of every mask (names and bits), to compare ranks without moving the masks."""
    h = hashlib.sha256()
    for name in sorted(masks):
        h.update(name.encode())
        h.update(masks[name].detach().to("cpu", torch.bool).contiguous().numpy().tobytes())
    return h.hexdigest()


class MaskSyncError(RuntimeError):
    pass


def check_in_sync(acc, masks: dict, step: int) -> str:
    """All ranks exchange the hash of their masks; any difference stops the run. INC has no sync of its
    own: masks agree only because DDP averaged the gradients before INC's optimizer-step hook scored
    them, so a rank that scored other gradients (or skipped a step) must not train on."""
    digest = masks_digest(masks)
    if acc.num_processes == 1:
        return digest
    from accelerate.utils import gather_object

    got = gather_object([digest])
    if len(set(got)) > 1:
        raise MaskSyncError(
            f"pruning masks differ between ranks after the mask update at step {step}: "
            + ", ".join(f"rank {r} {d[:12]}" for r, d in enumerate(got))
            + "; the ranks no longer train the same model"
        )
    return digest
