"""Runtimes as a plain dict: backend name -> loader(paths, threads, streams) -> Runner.

A Runner maps a numpy feed (input_ids, attention_mask, token_type_ids) to logits and carries what
actually ran: provider, precision, threads and, for OpenVINO INT8, how many FC layers use the
sparse kernel. Eval and bench share these loaders, so accuracy and speed describe the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.core.common import read_json
from pipeline.core.registry import BACKENDS as REGISTRY


@dataclass
class Runner:
    run: Callable[[dict], np.ndarray]
    info: dict
    compiled: object = field(default=None, repr=False)  # OpenVINO compiled model, for async streams

    def kernels(self) -> dict:
        """Which FC kernels ran. Call after running a shape: with dynamic shapes OpenVINO picks
        primitives at the first inference, so counting before that finds none."""
        if self.compiled is None:
            return {}
        from pipeline.runtime.openvino import sparse_fc_count

        return {"sparse_fc_layers": sparse_fc_count(self.compiled)}


@dataclass(frozen=True)
class ModelPaths:
    torch_dir: Path
    onnx: Path
    compiled_dir: Path


def _torch_fp32(paths: ModelPaths, threads: int, streams: int) -> Runner:
    import torch

    from pipeline.core.models import load_trained

    torch.set_num_threads(threads)
    model = load_trained(paths.torch_dir).eval()

    def run(feed):
        with torch.inference_mode():
            return model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()

    return Runner(run, {"provider": "torch-CPU", "precision": "fp32", "inference_precision": "f32"})


def _ort(precision: str):
    def load(paths: ModelPaths, threads: int, streams: int) -> Runner:
        from pipeline.runtime.ort import make_session

        ort_cfg = read_json(paths.compiled_dir / "ort_config.json")
        path = paths.onnx if precision == "fp32" else paths.compiled_dir / "int8.onnx"
        sess, info = make_session(
            path,
            ort_cfg["providers"],
            allow_fallback=ort_cfg["allow_fallback"],
            threads=threads,
            trt=ort_cfg["trt"],
        )
        names = {i.name for i in sess.get_inputs()}

        def run(feed):
            return sess.run(["logits"], {k: v for k, v in feed.items() if k in names})[0]

        return Runner(
            run,
            {
                "provider": ",".join(info["used"]),
                "precision": precision,
                "inference_precision": "f32" if precision == "fp32" else "int8-dynamic",
            },
        )

    return load


def ov_config(compile_config: dict, xml: str, hint: str | None, sparse: bool) -> dict:
    """The compile stage's configuration for one IR: hint None keeps its precision; the sparse rate
    applies to the INT8 IR only, and only when `sparse`. Bench, eval and deploy bundles share it."""
    from pipeline.runtime.openvino import SPARSE_RATE_KEY

    config = dict(compile_config)
    if hint:
        config["INFERENCE_PRECISION_HINT"] = hint
    if not sparse or xml != "int8.xml":
        config.pop(SPARSE_RATE_KEY, None)
    return config


def _ov(xml: str, hint: str | None, sparse: bool):
    """hint None: the compile stage's configuration (INT8 IR); sparse False drops the sparse rate."""

    def load(paths: ModelPaths, threads: int, streams: int) -> Runner:
        from pipeline.runtime import openvino as dov

        config = ov_config(read_json(paths.compiled_dir / "compile_config.json"), xml, hint, sparse)
        config.update(
            {
                "INFERENCE_NUM_THREADS": str(threads),
                "NUM_STREAMS": str(streams),
                "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
            }
        )
        compiled = dov.compile_model(paths.compiled_dir / xml, config)
        request = compiled.create_infer_request()
        names = {i.get_any_name() for i in compiled.inputs}

        def run(feed):
            # share_inputs: no copy of the numpy feed per call, as benchmark_app binds its tensors once
            return request.infer({k: v for k, v in feed.items() if k in names}, share_inputs=True)[0].copy()

        precision = "int8" if xml == "int8.xml" else {"f32": "fp32"}.get(hint, hint)
        info = {
            "provider": "openvino-CPU",
            "precision": precision,
            "inference_precision": dov.actual_precision(compiled),
            "sparse_rate": config.get(dov.SPARSE_RATE_KEY),
        }
        return Runner(run, info, compiled)

    return load


def _loader(b):
    if b.runtime == "torch":
        return _torch_fp32
    if b.runtime == "onnxruntime":
        return _ort(b.precision)
    return _ov(b.artifact, b.hint, sparse=b.sparse)


BACKENDS = {name: _loader(b) for name, b in REGISTRY.items()}  # one per pipeline.core.registry entry


def load(backend: str, paths: ModelPaths, threads: int, streams: int = 1) -> Runner:
    if backend not in BACKENDS:
        raise KeyError(f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if streams > 1 and not backend.startswith("ov-"):
        raise ValueError(f"streams={streams} needs an OpenVINO backend; {backend} runs one stream")
    runner = BACKENDS[backend](paths, threads, streams)
    runner.info.update(backend=backend, threads=threads, streams=streams)
    return runner


def model_paths(model: str, params_path: str) -> ModelPaths:
    """Where a deployable model's artifacts live, from the stages that wrote them."""
    from pipeline.core.models import MODEL_STAGES
    from pipeline.core.params import upstream_dir

    return ModelPaths(
        upstream_dir(MODEL_STAGES[model], params_path),
        upstream_dir("export", params_path) / model / "model.onnx",
        upstream_dir("compile", params_path) / model,
    )
