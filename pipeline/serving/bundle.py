"""Write an edge bundle: the model in one engine's format, its tokenizer unless fused, labels, the
runtime configuration, the runner itself, the wheels it needs (exact versions) and a sha256 manifest.

A bundle folder is self-contained: copy it, `pip install -r requirements.txt`, `python runner.py
--text ...`. The manifest lets the runner refuse a file that changed after the bundle was written.
"""

from __future__ import annotations

import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pipeline.core.common import atomic_dir, sha256_file, write_json
from pipeline.serving import runner

PROBLEM_TYPES = ("classification", "regression")
# engine -> the wheels runner.py imports for it (numpy always)
ENGINE_WHEELS = {
    "openvino-text": ("numpy", "openvino", "openvino-tokenizers"),
    "openvino": ("numpy", "openvino", "tokenizers"),
    "onnxruntime": ("numpy", "onnxruntime", "tokenizers"),
}


WHEEL_NAMES = {
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu")
}  # one import package, two wheels (setup.sh --gpu)


def _pin(wheel: str) -> str:
    for name in WHEEL_NAMES.get(wheel, (wheel,)):
        try:
            return f"{name}=={version(name)}"
        except PackageNotFoundError:
            continue
    raise PackageNotFoundError(
        f"none of {WHEEL_NAMES.get(wheel, (wheel,))} is installed; the bundle cannot pin it"
    )


def requirements(engine: str) -> list[str]:
    """Exact pins of this environment's versions: the edge runs what the bundle was checked with."""
    return [_pin(w) for w in ENGINE_WHEELS[engine]]


def _check_inputs(
    engine: str,
    model_files: dict,
    tokenizer_dir,
    labels,
    problem_type: str,
    max_length: int,
    runtime_config: dict,
    info: dict,
) -> None:
    """Fail before anything is created: a half-checked bundle must never reach the output path."""
    if engine not in runner.ENGINE_FILES:
        raise ValueError(f"engine {engine!r}; allowed: {', '.join(runner.ENGINE_FILES)}")
    want = {f for f in runner.ENGINE_FILES[engine] if f != runner.TOKENIZER_FILE}
    if set(model_files) != want:
        raise ValueError(f"engine {engine} takes model files {sorted(want)}, got {sorted(model_files)}")
    for path in model_files.values():
        if not Path(path).is_file():
            raise FileNotFoundError(f"model file missing: {path}")
    if runner.TOKENIZER_FILE in runner.ENGINE_FILES[engine]:
        if tokenizer_dir is None or not (Path(tokenizer_dir) / runner.TOKENIZER_FILE).is_file():
            raise FileNotFoundError(
                f"no {runner.TOKENIZER_FILE} in tokenizer dir {tokenizer_dir} "
                "(save a fast tokenizer there with save_pretrained)"
            )
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"problem_type {problem_type!r}; allowed: {', '.join(PROBLEM_TYPES)}")
    if problem_type == "regression" and labels:
        raise ValueError("a regression bundle takes no labels")
    if labels is not None and not (labels and all(isinstance(x, str) for x in labels)):
        raise ValueError(f"labels must be a non-empty list of strings or None, got {labels!r}")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an int >= 2, got {max_length!r}")
    if engine.startswith("openvino"):
        bad = {k: v for k, v in runtime_config.items() if not (isinstance(k, str) and isinstance(v, str))}
        if bad:  # OpenVINO properties are strings; a float here would round-trip as something else
            raise TypeError(f"an OpenVINO runtime_config maps str to str; offending entries: {bad!r}")
    elif not isinstance(runtime_config.get("providers"), list):
        raise TypeError(f"an onnxruntime runtime_config needs a providers list, got {runtime_config!r}")
    if clash := {"format", "engine", "files", "requirements"} & set(info):
        raise ValueError(f"info may not set reserved manifest keys: {sorted(clash)}")


def bundle_size(path: Path) -> dict:
    """A bundle folder's bytes, raw and gzip (level 6, file by file): what a device download costs."""
    import gzip

    files = [f for f in Path(path).iterdir() if f.is_file()]
    return {
        "bytes": sum(f.stat().st_size for f in files),
        "gzip_bytes": sum(len(gzip.compress(f.read_bytes(), 6)) for f in files),
    }


def write_bundle(
    out_dir,
    engine: str,
    model_files: dict[str, Path],
    tokenizer_dir: Path | None,
    *,
    labels: list[str] | None,
    problem_type: str,
    max_length: int,
    runtime_config: dict,
    info: dict,
) -> dict:
    """Write the bundle to `out_dir` atomically and return its manifest."""
    _check_inputs(engine, model_files, tokenizer_dir, labels, problem_type, max_length, runtime_config, info)
    pins = requirements(engine)
    with atomic_dir(out_dir) as tmp:
        for name, src in model_files.items():
            shutil.copyfile(src, tmp / name)
        if runner.TOKENIZER_FILE in runner.ENGINE_FILES[engine]:
            shutil.copyfile(Path(tokenizer_dir) / runner.TOKENIZER_FILE, tmp / runner.TOKENIZER_FILE)
        shutil.copyfile(runner.__file__, tmp / runner.RUNNER_FILE)
        (tmp / runner.REQUIREMENTS_FILE).write_text("\n".join(pins) + "\n")
        write_json(
            tmp / runner.LABELS_FILE,
            {
                "labels": list(labels) if labels else None,
                "problem_type": problem_type,
                "max_length": max_length,
            },
        )
        write_json(tmp / runner.CONFIG_FILE, dict(runtime_config))
        # Hash the copies, not the sources: the manifest vouches for what is in the bundle.
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        manifest = {"format": runner.FORMAT, "engine": engine, "requirements": pins, **info, "files": files}
        write_json(tmp / runner.MANIFEST_FILE, manifest)
    return manifest
