"""A latency table for this CPU: how long an encoder of a given shape runs, measured, not counted.

A BERT student's time is a fixed part (embeddings, pooler, classifier, runtime overhead) plus the sum of
its layers' times, and a layer's time depends on its heads and FFN width together (small matrices run
below the machine's peak, so halving both does not halve the time: an additive model of the two was off
by up to 45% here). So the table times:
  - three-layer models on a grid of head counts x FFN widths: the layer costs, interpolated between;
  - one-layer models at a few widths: with their three-layer twins, the fixed part;
  - a few other layer counts and widths, and the full model, to check predictions against measurements.
Weights are random (speed does not depend on their values); each model goes the way a student ships:
torch.onnx.export, then OpenVINO IR with NNCF INT8 (`ov-int8`) or onnxruntime dynamic INT8 (`ort-int8`).
Tables are cached per CPU, runtime version, backend, shapes, threads and base model shape.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from pipeline.core.common import cpu_info, write_json
from pipeline.core.registry import SPEED_BACKENDS as RUNTIMES

GRID_LAYERS = 3
ROUNDS = 3


def cache_dir() -> Path:
    return Path(os.environ.get("KASP_CACHE_DIR", Path.home() / ".cache" / "kasp")) / "latency"


def base_shape(config) -> dict:
    """What of the base model a table depends on."""
    return {
        "hidden": config.hidden_size,
        "layers": config.num_hidden_layers,
        "heads": config.num_attention_heads,
        "ffn": config.intermediate_size,
        "vocab": config.vocab_size,
    }


def grid(base: dict) -> dict:
    """The head counts and FFN widths timed, denser where students land (small), for bilinear interpolation."""
    n, f = base["heads"], base["ffn"]
    heads = sorted({n, max(1, n // 2), max(1, n // 3), max(1, n // 4), max(1, n // 6), 1})
    ffns = sorted({f, f // 2, f // 3, f // 6, f // 12} - {0})
    return {"heads": heads, "ffn": ffns}


def table_key(base: dict, backend: str, shapes: list[list[int]], threads: int) -> dict:
    from importlib import metadata

    cpu = cpu_info()
    return {
        "cpu": cpu["cpu"],
        "isa": cpu["isa"],
        "backend": backend,
        "runtime": f"{RUNTIMES[backend]}=={metadata.version(RUNTIMES[backend])}",
        "shapes": [list(s) for s in shapes],
        "threads": threads,
        "base": base,
        "grid": grid(base),
    }


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def random_model(config, layers: list[dict]):
    """A randomly initialised classifier with these per-layer {heads, ffn} shapes."""
    from transformers import AutoModelForSequenceClassification

    from pipeline.core.models import reshape_layers

    config = config.__class__.from_dict({**config.to_dict(), "num_hidden_layers": len(layers)})
    model = AutoModelForSequenceClassification.from_config(config)
    reshape_layers(model, layers)
    return model.eval()


class _Compiled:
    """One shape's model built the way it ships, ready to time."""

    def __init__(self, backend: str, threads: int, work: Path):
        self.backend, self.threads, self.work = backend, threads, work

    def build(self, config, layers: list[dict], vocab: int):
        from pipeline.onnx_export.onnx import export_torch

        self.work.mkdir(parents=True)
        onnx_path = export_torch(random_model(config, layers), self.work, 18)
        return self._ov(onnx_path, vocab) if self.backend == "ov-int8" else self._ort(onnx_path)

    def _ov(self, onnx_path: Path, vocab: int):
        from pipeline.runtime import openvino as dov
        from pipeline.timing.harness import synthetic_feed

        calib = [synthetic_feed(1, 32, vocab, s) for s in range(4)]
        xml = onnx_path.with_name("int8.xml")
        dov.save(dov.quantize_int8(dov.convert(onnx_path), calib, len(calib)), xml)
        compiled = dov.compile_model(
            xml,
            {
                "INFERENCE_PRECISION_HINT": "f32",
                "PERFORMANCE_HINT": "LATENCY",
                "NUM_STREAMS": "1",
                "INFERENCE_NUM_THREADS": str(self.threads),
            },
        )
        request = compiled.create_infer_request()
        return lambda feed: request.infer(feed, share_inputs=True)

    def _ort(self, onnx_path: Path):
        from pipeline.runtime.ort import make_session, quantize_dynamic_int8

        int8 = onnx_path.with_name("int8.onnx")
        quantize_dynamic_int8(onnx_path, int8)
        sess, _ = make_session(int8, ["cpu"], threads=self.threads)
        names = {i.name for i in sess.get_inputs()}
        return lambda feed: sess.run(["logits"], {k: v for k, v in feed.items() if k in names})


def time_all(runners: list, feeds: dict, progress=print) -> list[dict]:
    """Per runner, per shape: the fastest of ROUNDS medians. A round times every model once, in
    alternating order, so a burst of load from elsewhere on the machine (it only ever adds time)
    slows one round of a model, minutes apart from its others."""
    from pipeline.timing.harness import time_loop

    medians = [{name: [] for name in feeds} for _ in runners]
    for k in range(ROUNDS):
        order = list(range(len(runners)))[:: 1 if k % 2 == 0 else -1]
        for i in order:
            for name, feed in feeds.items():
                lat = sorted(time_loop(lambda: runners[i](feed), warmup=2, min_iters=5, max_seconds=0.25))
                medians[i][name].append(lat[len(lat) // 2])
        progress(f"[latency] timing round {k + 1}/{ROUNDS} done")
    return [{name: round(1000 * min(m), 4) for name, m in row.items()} for row in medians]


def plan_rows(base: dict) -> list[dict]:
    """Which models the table times: (layers, heads, ffn), the check rows marked."""
    g, n, f = grid(base), base["heads"], base["ffn"]
    rows = [{"layers": GRID_LAYERS, "heads": h, "ffn": w} for h in g["heads"] for w in g["ffn"]]
    rows += [{"layers": 1, "heads": h, "ffn": w} for h, w in ((n, f), (max(1, n // 2), f // 2), (1, f // 12))]
    checks = [
        (base["layers"], n, f),
        (GRID_LAYERS + 1, max(1, n // 4), f // 4),
        (max(1, base["layers"] - 1), max(1, n // 6), f // 6),
    ]
    return rows + [{"layers": lay, "heads": h, "ffn": w, "check": True} for lay, h, w in checks]


def measure(config, backend: str, shapes: list[list[int]], threads: int, progress=print) -> dict:
    """Time every row of plan_rows; {"key", "rows": [{layers, heads, ffn, [check], ms: {b..xs..: ms}}]}."""
    import torch

    from pipeline.timing.harness import synthetic_feed

    if backend not in RUNTIMES:
        raise KeyError(f"latency tables time {', '.join(RUNTIMES)}; got {backend!r}")
    torch.set_num_threads(threads)
    base = base_shape(config)
    todo = plan_rows(base)
    with tempfile.TemporaryDirectory() as work:
        runners = []
        for i, row in enumerate(todo):
            shape = [{"heads": row["heads"], "ffn": row["ffn"]}] * row["layers"]
            runners.append(
                _Compiled(backend, threads, Path(work) / str(i)).build(config, shape, base["vocab"])
            )
            progress(
                f"[latency] built {i + 1}/{len(todo)}: {row['layers']} layers x {row['heads']} heads x "
                f"FFN {row['ffn']}"
            )
        feeds = {f"b{b}xs{s}": synthetic_feed(b, s, base["vocab"], 0) for b, s in shapes}
        times = time_all(runners, feeds, progress)
    rows = [{**row, "ms": ms} for row, ms in zip(todo, times)]
    return {"key": table_key(base, backend, shapes, threads), "rows": rows}


def load_or_measure(config, backend: str, shapes: list[list[int]], threads: int, progress=print) -> dict:
    """The cached table for this CPU, runtime, backend, shapes and base shape, measured on a miss."""
    key = table_key(base_shape(config), backend, shapes, threads)
    path = cache_dir() / f"{backend}-{key_digest(key)}.json"
    if path.is_file():
        table = json.loads(path.read_text())
        if table.get("key") == key:
            return {**table, "cached": str(path)}
    progress(
        f"[latency] no table for {key['cpu']} / {key['runtime']} / {backend} at {shapes}: timing "
        f"{len(plan_rows(key['base']))} random-weight models (cached in {path})"
    )
    table = measure(config, backend, shapes, threads, progress)
    _cache(path, table)
    return {**table, "cached": None}


def _cache(path: Path, record: dict) -> None:
    """Write a cache file whole or not at all (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    write_json(tmp, record)
    tmp.replace(path)


def time_structure(config, backend: str, shapes: list[list[int]], threads: int, layers: list[dict]) -> dict:
    """One structure timed as the table times its models ({shape name: ms}), cached beside the tables."""
    import torch

    from pipeline.timing.harness import synthetic_feed

    key = {**table_key(base_shape(config), backend, shapes, threads), "layers": layers}
    path = cache_dir() / f"{backend}-{key_digest(key)}-structure.json"
    if path.is_file() and json.loads(path.read_text()).get("key") == key:
        return json.loads(path.read_text())["ms"]
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as work:
        run = _Compiled(backend, threads, Path(work) / "m").build(config, layers, config.vocab_size)
        feeds = {f"b{b}xs{s}": synthetic_feed(b, s, config.vocab_size, 0) for b, s in shapes}
        ms = time_all([run], feeds, progress=lambda *_: None)[0]
    _cache(path, {"key": key, "ms": ms})
    return ms
