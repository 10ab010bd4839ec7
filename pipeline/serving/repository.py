"""Model repositories for the servers users run: OpenVINO Model Server and NVIDIA Triton, each with a
validator that checks the repository the way the server will read it.

OVMS (openvinotoolkit/model_server docs/models_repository_classic.md): config.json with a
model_config_list, <name>/<integer version>/model.{xml,bin}, OpenVINO properties in plugin_config;
the docker image mounts the repository at /models. Triton: <name>/config.pbtxt and <name>/1/model.*,
parsed here against the real schema (tritonclient's model_config_pb2).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

OVMS_MOUNT = "/models"  # where `docker run -v <repo>:/models` puts the repository inside the OVMS container
NP_TO_TRITON = {"int64": "TYPE_INT64", "int32": "TYPE_INT32", "float32": "TYPE_FP32", "object": "TYPE_STRING"}


class RepositoryError(ValueError):
    """A written repository would not load the way its server reads it."""


def write_ovms(root: Path, name: str, xml: Path, plugin_config: dict[str, str]) -> dict:
    """config.json + name/1/model.{xml,bin}; returns the model's config entry."""
    version = root / name / "1"
    version.mkdir(parents=True)
    shutil.copyfile(xml, version / "model.xml")
    shutil.copyfile(xml.with_suffix(".bin"), version / "model.bin")
    entry = {
        "name": name,
        "base_path": f"{OVMS_MOUNT}/{name}",
        "target_device": "CPU",
        "plugin_config": dict(plugin_config),
    }
    cfg_path = root / "config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {"model_config_list": []}
    cfg["model_config_list"].append({"config": entry})
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    return entry


def validate_ovms(root: Path) -> list[dict]:
    """Load every model as OVMS would: the highest integer version folder under base_path, read the IR,
    compile it with plugin_config and read each property back. Returns one record per model."""
    import openvino as ov
    import openvino_tokenizers  # noqa: F401  OVMS has the extension built in; a string-in IR needs it here

    cfg = json.loads((root / "config.json").read_text())
    out = []
    for item in cfg.get("model_config_list", []):
        c = item["config"]
        if not c["base_path"].startswith(OVMS_MOUNT + "/"):
            raise RepositoryError(
                f"{root}/config.json: {c['name']} base_path {c['base_path']!r} is not under "
                f"{OVMS_MOUNT}, where the container mounts this repository"
            )
        base = root / c["base_path"][len(OVMS_MOUNT) + 1 :]
        versions = sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())
        if not versions:
            raise RepositoryError(f"{base}: no integer version folder")
        xml = base / str(versions[-1]) / "model.xml"
        try:
            compiled = ov.Core().compile_model(str(xml), c.get("target_device", "CPU"), c["plugin_config"])
        except RuntimeError as e:
            raise RepositoryError(
                f"{xml}: does not compile with plugin_config {c['plugin_config']}: {_cause(e)}"
            ) from e
        got = {k: _property_text(compiled.get_property(k)) for k in c["plugin_config"]}
        wrong = {k: (v, got[k]) for k, v in c["plugin_config"].items() if not _same_property(v, got[k])}
        if wrong:
            raise RepositoryError(f"{xml}: plugin_config not applied (asked, read back): {wrong}")
        _one_inference(compiled, xml)
        out.append(
            {
                "name": c["name"],
                "version": versions[-1],
                "properties": got,
                "inputs": {p.get_any_name(): str(p.get_element_type()) for p in compiled.inputs},
            }
        )
    return out


def _property_text(value) -> str:
    """OpenVINO reads element types back as Type objects (f32), enums and numbers as their own types."""
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value)


def _same_property(asked: str, got: str) -> bool:
    try:
        return abs(float(asked) - float(got)) < 1e-6  # rates read back as float32 (0.88 -> 0.8799999952)
    except ValueError:  # enums read back as "PerformanceMode.LATENCY" or "LATENCY"
        return asked.lower() == got.lower().rsplit(".", 1)[-1]


def _one_inference(compiled, xml: Path) -> None:
    """A model can compile and still fail at its first request (a fused IR with a broken state sink)."""
    import numpy as np

    feed = {
        p.get_any_name(): np.array(["kasp validation"])
        if p.get_element_type().get_type_name() == "string"
        else np.ones((1, 8), np.int64)
        for p in compiled.inputs
    }
    try:
        compiled(feed)
    except RuntimeError as e:
        raise RepositoryError(f"{xml}: compiles but fails its first inference: {_cause(e)}") from e


def _cause(e: Exception) -> str:
    """OpenVINO nests a C++ trace; its last non-empty line is the cause."""
    return next((line for line in reversed(str(e).splitlines()) if line.strip()), "unknown error")


def triton_config(
    name: str,
    platform: str,
    inputs: dict,
    outputs: dict,
    max_batch_size: int,
    kind: str,
    accelerators: dict | None = None,
    parameters: dict | None = None,
) -> str:
    """config.pbtxt text. inputs/outputs: name -> (numpy dtype name, dims without the batch dim)."""

    def tensors(d):
        return ",\n".join(
            f'  {{ name: "{n}" data_type: {NP_TO_TRITON[t]} dims: {list(dims)} }}'
            for n, (t, dims) in d.items()
        )

    text = [
        f'name: "{name}"',
        f'backend: "{platform}"',
        f"max_batch_size: {max_batch_size}",
        f"input [\n{tensors(inputs)}\n]",
        f"output [\n{tensors(outputs)}\n]",
        "dynamic_batching { }",
        f"instance_group [ {{ count: 1 kind: {kind} }} ]",
    ]
    if accelerators:
        params = " ".join(f'parameters {{ key: "{k}" value: "{v}" }}' for k, v in accelerators.items())
        text.append(
            f"optimization {{ execution_accelerators {{ gpu_execution_accelerator: "
            f'[ {{ name: "tensorrt" {params} }} ] }} }}'
        )
    for k, v in (parameters or {}).items():
        text.append(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}')
    return "\n".join(text) + "\n"


def write_triton(root: Path, name: str, model_file: Path, config_text: str) -> Path:
    folder = root / name
    (folder / "1").mkdir(parents=True)
    for f in [model_file] + ([model_file.with_suffix(".bin")] if model_file.suffix == ".xml" else []):
        shutil.copyfile(f, folder / "1" / f"model{f.suffix}")
    (folder / "config.pbtxt").write_text(config_text)
    return folder


def model_io(path: Path) -> tuple[dict, dict]:
    """The model's inputs and outputs as its runtime loads it: name -> (numpy dtype name, dims without
    the batch dim). The batch dim must be dynamic: Triton batches on it when max_batch_size > 0."""
    if path.suffix == ".onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        ort_np = {"tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(float)": "float32"}
        ports = [
            (p.name, ort_np[p.type], [d if isinstance(d, int) else -1 for d in p.shape])
            for p in (*sess.get_inputs(), *sess.get_outputs())
        ]
        n_in = len(sess.get_inputs())
    else:
        import openvino as ov

        m = ov.Core().read_model(str(path))
        ports = [
            (
                p.get_any_name(),
                p.get_element_type().to_dtype().name,
                [d.get_length() if d.is_static else -1 for d in p.get_partial_shape()],
            )
            for p in (*m.inputs, *m.outputs)
        ]
        n_in = len(m.inputs)
    if fixed := [n for n, _, dims in ports if not dims or dims[0] != -1]:
        raise RepositoryError(f"{path}: {fixed} have a fixed first dim; Triton needs it dynamic to batch")
    io = [{n: (t, dims[1:]) for n, t, dims in group} for group in (ports[:n_in], ports[n_in:])]
    return io[0], io[1]


BACKEND_FILES = {"onnxruntime": "model.onnx", "openvino": "model.xml"}


def validate_triton(root: Path) -> list[dict]:
    """Parse every config.pbtxt with Triton's schema and check names, dtypes and dims against the model."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    out = []
    for pbtxt in sorted(root.glob("*/config.pbtxt")):
        cfg = text_format.Parse(pbtxt.read_text(), mc.ModelConfig())
        if cfg.name != pbtxt.parent.name:
            raise RepositoryError(f"{pbtxt}: name {cfg.name!r} is not its folder's {pbtxt.parent.name!r}")
        if cfg.backend not in BACKEND_FILES:
            raise RepositoryError(f"{pbtxt}: backend {cfg.backend!r}; kasp writes {', '.join(BACKEND_FILES)}")
        model = pbtxt.parent / "1" / BACKEND_FILES[cfg.backend]
        if not model.is_file():
            raise RepositoryError(f"{pbtxt}: backend {cfg.backend} needs {model}, which is missing")
        if cfg.max_batch_size < 1 or not cfg.HasField("dynamic_batching") or not cfg.instance_group:
            raise RepositoryError(
                f"{pbtxt}: needs max_batch_size >= 1, dynamic_batching and an instance_group"
            )
        ins, outs = model_io(model)
        for kind, declared, real in (("input", cfg.input, ins), ("output", cfg.output, outs)):
            got = {t.name: (mc.DataType.Name(t.data_type), list(t.dims)) for t in declared}
            want = {n: (NP_TO_TRITON[d], dims) for n, (d, dims) in real.items()}
            if got != want:
                raise RepositoryError(f"{pbtxt}: {kind}s {got} do not match the model's {want}")
        out.append(
            {
                "name": cfg.name,
                "backend": cfg.backend,
                "max_batch_size": cfg.max_batch_size,
                "instance_kinds": [mc.ModelInstanceGroup.Kind.Name(g.kind) for g in cfg.instance_group],
                "inputs": sorted(ins),
            }
        )
    if not out:
        raise RepositoryError(f"{root}: no */config.pbtxt")
    return out
