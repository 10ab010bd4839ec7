"""Runtime backends and pruning criteria, declared once. Each entry says what eval and bench load
(pipeline.runtime.backends builds the loader from it), which compiled artifact it runs and whose size the
report shows, and the deploy target that ships it. Data only: validation imports this without importing a runtime.

Adding a backend: one entry here, plus its loader code in pipeline.runtime.backends when its runtime is new.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backend:
    name: str  # eval.backends / bench.backends
    runtime: str  # torch | onnxruntime | openvino
    precision: str  # the weights' precision: fp32 | int8
    artifact: str  # the file it runs: export's model.onnx, or compile's int8.onnx / fp32.xml / int8.xml
    size_key: str  # compile's sizes entry for that file
    hint: str | None = None  # OpenVINO INFERENCE_PRECISION_HINT; None keeps the compile stage's
    sparse: bool = False  # OpenVINO's sparse-weight kernel on (the compile stage's decompression rate)
    target: str | None = None  # deploy.target that ships it; None: measured, never shipped


REGISTRY = (
    Backend("torch-fp32", "torch", "fp32", "model.onnx", "onnx_fp32"),
    Backend("ort-fp32", "onnxruntime", "fp32", "model.onnx", "onnx_fp32", target="onnxruntime-fp32"),
    Backend("ort-int8", "onnxruntime", "int8", "int8.onnx", "onnx_int8", target="onnxruntime-int8"),
    Backend("ov-fp32", "openvino", "fp32", "fp32.xml", "ir_fp32", hint="f32", target="openvino-fp32"),
    Backend("ov-bf16", "openvino", "fp32", "fp32.xml", "ir_fp32", hint="bf16"),
    Backend("ov-int8", "openvino", "int8", "int8.xml", "ir_int8", sparse=True, target="openvino-int8"),
    # the same INT8 IR with the sparse kernel off: it slowed MiniLM-width students on AMX Xeons, so it is
    # a measured choice, not a default
    Backend("ov-int8-dense", "openvino", "int8", "int8.xml", "ir_int8", target="openvino-int8-dense"),
)
BACKENDS = {b.name: b for b in REGISTRY}
# deploy.target names, in the order `auto` reports them
TARGET_ORDER = (
    "openvino-int8",
    "openvino-int8-dense",
    "openvino-fp32",
    "onnxruntime-int8",
    "onnxruntime-fp32",
)
TARGETS = {t: next(b for b in REGISTRY if b.target == t) for t in TARGET_ORDER}


# prune.pruning_type -> where it comes from: INC's own criteria, or kasp's, registered into INC by
# pipeline.training.inc before pruning starts (adding one: an entry here and its registration there)
CRITERIA = {"magnitude": "inc", "snip_momentum": "inc", "snip": "inc", "gradient": "inc", "movement": "kasp"}

# prune.lr_schedule / teacher: how the learning rate moves (pipeline.training.schedule implements each)
LR_SCHEDULES = ("linear", "constant_then_decay", "rewind")

# prune.speed_backend: the runtimes a latency table can time, and the package whose version keys the table
SPEED_BACKENDS = {"ov-int8": "openvino", "ort-int8": "onnxruntime"}
