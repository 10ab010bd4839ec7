"""Intel Neural Compressor adapter: the only module that imports neural_compressor.

INC 3.7.1 is the last release with the training-time pruning API (WeightPruningConfig +
prepare_pruning + model_slim_*). It hooks the model's forward (mask updates) and the optimizer's
step (scores, masking); this adapter builds its config from params, carries its state through
checkpoints and undoes its global side effects.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from pipeline.core.registry import CRITERIA
from pipeline.training.schedule import step_range

# Pruner attributes that make up its progress; saved in checkpoints so a killed run resumes.
_SCALARS = (
    "global_step",
    "handled_global_step",
    "completed_pruned_cnt",
    "current_sparsity_ratio",
    "init_sparsity_ratio",
)
_TENSOR_DICTS = ("masks", "head_masks", "mha_scores")


def movement_step(weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Movement pruning's score increment, -W * dL/dW: positive for a weight the gradient pushes away
    from zero (it is becoming important), negative for one it pulls toward zero."""
    return -(weight * grad)


def register_movement() -> None:
    """Movement pruning (Sanh et al. 2020) as an INC criterion: the score of each weight accumulates
    movement_step over every training step, without decay and with its sign, and INC's scheduler keeps
    the highest scores. snip_momentum instead keeps |W * dL/dW| with a 0.9 momentum, which forgets and
    ignores the direction. Unlike the paper's learned scores there is no straight-through mask: a pruned
    weight is zero, so its score stops moving."""
    from neural_compressor.compression.pruner.criteria import CRITERIA, PruningCriterion, register_criterion

    if "movement" in CRITERIA:
        return

    @register_criterion("movement")
    class MovementCriterion(PruningCriterion):
        def __init__(self, modules, config, pattern):
            super().__init__(modules, config, pattern)
            for key, mod in modules.items():
                zeros = torch.zeros_like(mod.weight, dtype=torch.float32)  # on the weight's device
                self.scores[key] = (
                    pattern.reduce_score(zeros, key) if hasattr(pattern, "reduce_score") else zeros
                )

        def on_before_optimizer_step(self):
            with torch.no_grad():
                for key, mod in self.modules.items():
                    if mod.weight.grad is None:
                        continue
                    step = movement_step(mod.weight.data, mod.weight.grad)
                    if hasattr(self.pattern, "reduce_score"):
                        step = self.pattern.reduce_score(step, key, force=True)
                    self.scores[key] += step


def cubic_sparsity(target: float, step: int, total: int, init: float = 0.0) -> float:
    """Zhu & Gupta (2017), the ramp of movement pruning and SparseBERT: s = s_f + (s_0 - s_f)(1 - k/n)^3,
    steep first and flat at the end. INC's own `cube` is s_f (k/n)^3, the mirror image: sparsity stays
    low, then the last few updates remove most of the weights (MRPC at 90%: 66% after 90% of the ramp,
    then 90%, and the student's dev accuracy fell 5 points in that last stretch)."""
    return target + (init - target) * (1.0 - step / total) ** 3


def register_cubic() -> None:
    """`decay: cubic` through INC's scheduler registry: its iterative scheduler, with one more decay."""
    from neural_compressor.compression.pruner.schedulers import SCHEDULERS, register_scheduler

    base = SCHEDULERS["iterative"]
    if getattr(base, "kasp_cubic", False):
        return

    @register_scheduler("iterative")
    class CubicScheduler(base):
        kasp_cubic = True

        def update_sparsity_ratio(
            self, target_ratio, current_prune_step, total_prune_steps, masks, init_sparsity_ratio=0.0
        ):
            if self.config.sparsity_decay_type != "cubic":
                return super().update_sparsity_ratio(
                    target_ratio, current_prune_step, total_prune_steps, masks, init_sparsity_ratio
                )
            capped = min(self.config.max_sparsity_ratio_per_op, target_ratio)
            return min(
                target_ratio,
                cubic_sparsity(capped, current_prune_step, total_prune_steps, init_sparsity_ratio),
            )


KASP_CRITERIA = {"movement": register_movement}  # pipeline.core.registry.CRITERIA's "kasp" entries


def pruning_configs(model, p: dict, total_steps: int, structure: dict | None = None) -> list[dict]:
    """INC's configs: `structure` (a planned student: pipeline.training.plan) prunes heads and FFN
    channels to its own two targets; otherwise prune.pattern at prune.target_sparsity."""
    from neural_compressor.compression.pruner import parse_auto_slim_config

    start, end, freq = step_range(p, total_steps)
    common = {
        "pruning_type": p["pruning_type"],
        "pruning_scope": p["scope"],
        "start_step": start,
        "end_step": end,
        "pruning_frequency": freq,
        "sparsity_decay_type": p["decay"],
        "excluded_op_names": list(p["excluded"]),
        "max_sparsity_ratio_per_op": 0.99,
    }
    if (
        structure is not None
    ):  # every layer to the plan's shape: under global scope INC took all heads of a layer
        return parse_auto_slim_config(
            model,
            ffn2_sparsity=structure["ffn_sparsity"],
            mha_sparsity=structure["mha_sparsity"],
            **{**common, "pruning_scope": "local"},
        )
    if p["pattern"] == "channelx1":
        # FFN second Linear by input channel + whole attention heads: both can be sliced away afterwards.
        return parse_auto_slim_config(
            model, ffn2_sparsity=p["target_sparsity"], mha_sparsity=p["target_sparsity"], **common
        )
    return [
        {
            "op_names": [".*encoder.*"],
            "pattern": p["pattern"],
            "target_sparsity": p["target_sparsity"],
            **common,
        }
    ]


@contextlib.contextmanager
def traceable(model):
    """Accelerate's mixed precision replaces model.forward by an autocast wrapper. INC finds attention
    heads by tracing the model with torch.jit and matching three Linear layers fed by one input, which
    the wrapper's casts hide: under bf16 it found 0 of MiniLM's 6 attention blocks, and pruned no head.
    Within the block the model has its plain forward (Accelerate keeps it as _original_forward)."""
    inner = getattr(model, "module", model)  # the model inside a DDP wrapper
    wrapped, plain = inner.__dict__.get("forward"), inner.__dict__.get("_original_forward")
    if wrapped is None or plain is None:
        yield
        return
    inner.forward = plain
    try:
        yield
    finally:
        inner.forward = wrapped


class Pruner:
    """INC pruning attached to a model and optimizer, with checkpointable state."""

    def __init__(self, model, optimizer, p: dict, total_steps: int, on_update=None, structure=None):
        """`on_update(masks, step)` runs after each of INC's mask updates (the data-parallel mask check)."""
        from neural_compressor import WeightPruningConfig
        from neural_compressor.compression.pruner import prepare_pruning

        # INC logs every layer at every mask update at INFO; keep its warnings only.
        logging.getLogger("neural_compressor").setLevel(logging.WARNING)
        if CRITERIA[p["pruning_type"]] == "kasp":
            KASP_CRITERIA[p["pruning_type"]]()
        register_cubic()
        orig_save = torch.save
        configs = pruning_configs(model, p, total_steps, structure)
        self.model, self.optimizer = model, optimizer
        with traceable(model):
            self.pruning = prepare_pruning(model, WeightPruningConfig(configs), optimizer=optimizer)
        torch.save = orig_save  # prepare_pruning monkeypatches torch.save process-wide
        blind = [i for i, pr in enumerate(self.pruning.pruners) if getattr(pr, "mha_modules", None) == []]
        if blind:  # INC only warns; a head target would then go unmet after the whole run
            raise RuntimeError(
                f"INC's attention-head pruner found no attention blocks to prune in "
                f"{type(model).__name__} (pruners {blind}): head pruning needs a BERT-style "
                "self-attention with query, key and value Linear layers on one input"
            )
        self.pruning.on_train_begin()
        self.end_step = step_range(p, total_steps)[1]
        if on_update is not None:
            self._after_updates(on_update)

    def masks(self) -> dict:
        """Every pruner's masks by name (weight masks; head masks for INC's attention-head pruner)."""
        return {
            f"{i}.{kind}.{name}": m
            for i, pr in enumerate(self.pruning.pruners)
            for kind in ("masks", "head_masks")
            if isinstance(getattr(pr, kind, None), dict)
            for name, m in getattr(pr, kind).items()
            if torch.is_tensor(m)
        }

    def _after_updates(self, on_update) -> None:
        """Wrap INC's optimizer step: a change of its completed-update count means the masks were
        just updated. detach() restores INC's saved original step, so this goes with INC's hook."""
        inc_step, opt = self.optimizer.step, self.optimizer
        self._seen = self._updates_done()

        def step(*args, **kwargs):
            out = inc_step(*args, **kwargs)
            if self._updates_done() != self._seen:
                self._seen = self._updates_done()
                on_update(self.masks(), max(getattr(pr, "global_step", 0) for pr in self.pruning.pruners))
            return out

        opt.step = step

    def _updates_done(self) -> int:
        return sum(getattr(pr, "completed_pruned_cnt", 0) for pr in self.pruning.pruners)

    def state_dict(self) -> dict:
        state = []
        for pr in self.pruning.pruners:
            s = {k: getattr(pr, k) for k in _SCALARS if hasattr(pr, k)}
            for k in _TENSOR_DICTS:
                if isinstance(getattr(pr, k, None), dict):
                    s[k] = {n: t.clone() for n, t in getattr(pr, k).items() if torch.is_tensor(t)}
            crit = getattr(pr, "criterion", None)
            if crit is not None and isinstance(getattr(crit, "scores", None), dict):
                s["scores"] = {n: t.clone() for n, t in crit.scores.items() if torch.is_tensor(t)}
            state.append(s)
        return {"pruners": state}

    def load_state_dict(self, state: dict) -> None:
        for pr, s in zip(self.pruning.pruners, state["pruners"]):
            for k, v in s.items():
                if (
                    k == "scores" or k in _TENSOR_DICTS
                ):  # checkpoints load on the CPU; back to each tensor's device
                    into = pr.criterion.scores if k == "scores" else getattr(pr, k)
                    into.update({n: t.to(into[n].device) if n in into else t for n, t in v.items()})
                else:
                    setattr(pr, k, v)
        self._seen = self._updates_done()  # the restored count is not a new update

    def detach(self) -> None:
        """Remove INC's hooks so saving and later forwards are plain PyTorch."""
        optimizer = self.optimizer
        self.model.inc_hook_handle.remove()
        for attr in ("prunings", "inc_hook_handle"):
            if hasattr(self.model, attr):
                delattr(self.model, attr)
        if hasattr(optimizer, "orig_step"):
            optimizer.step = optimizer.orig_step
            del optimizer.orig_step, optimizer.prunings


def slim(model, round_multiplier: int = 32) -> None:
    """Physically remove pruned FFN channels and attention heads.

    INC's model_slim() swallows failures, so call both parts and let the caller check shapes.
    """
    from neural_compressor.compression.pruner.model_slim.auto_slim import model_slim_ffn2, model_slim_mha

    model_slim_ffn2(model, round_multiplier=round_multiplier)
    model_slim_mha(model)
