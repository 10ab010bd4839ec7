"""Write an edge bundle: the OpenVINO IR, the tokenizer, labels, compile settings and a sha256 manifest.

The bundle is everything `deploy.runner` needs (openvino + tokenizers + numpy, nothing from this project),
and the manifest lets the runner refuse a file that changed after the compile stage wrote it.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from deploy.runner import CONFIG_FILE, FORMAT, LABELS_FILE, MANIFEST_FILE, REQUIRED, TOKENIZER_FILE
from pipeline.core.common import atomic_dir, sha256_file, write_json

PROBLEM_TYPES = ("classification", "regression")


def _check_inputs(ir_xml: Path, tokenizer_dir: Path, labels, problem_type: str, max_length: int,
                  compile_config: dict, info: dict) -> None:
    """Fail before anything is created: a half-checked bundle must never reach the output path."""
    for path in (ir_xml, ir_xml.with_suffix(".bin")):
        if not path.is_file():
            raise FileNotFoundError(f"OpenVINO IR file missing: {path}")
    if not (tokenizer_dir / TOKENIZER_FILE).is_file():
        raise FileNotFoundError(f"no {TOKENIZER_FILE} in tokenizer dir {tokenizer_dir} "
                                "(save a fast tokenizer there with save_pretrained)")
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"problem_type {problem_type!r}; allowed: {', '.join(PROBLEM_TYPES)}")
    if problem_type == "regression" and labels:
        raise ValueError("a regression bundle takes no labels")
    if labels is not None and not (labels and all(isinstance(x, str) for x in labels)):
        raise ValueError(f"labels must be a non-empty list of strings or None, got {labels!r}")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an int >= 2, got {max_length!r}")
    bad = {k: v for k, v in compile_config.items() if not (isinstance(k, str) and isinstance(v, str))}
    if bad:  # OpenVINO properties are strings; a float here would round-trip as something else
        raise TypeError(f"compile_config must map str to str; offending entries: {bad!r}")
    clash = {"format", "files"} & set(info)
    if clash:
        raise ValueError(f"info may not set reserved manifest keys: {sorted(clash)}")


def write_bundle(out_dir, ir_xml: Path, tokenizer_dir: Path, *, labels: list[str] | None, problem_type: str,
                 max_length: int, compile_config: dict[str, str], info: dict) -> dict:
    """Write the bundle to `out_dir` atomically and return its manifest."""
    ir_xml, tokenizer_dir = Path(ir_xml), Path(tokenizer_dir)
    _check_inputs(ir_xml, tokenizer_dir, labels, problem_type, max_length, compile_config, info)
    with atomic_dir(out_dir) as tmp:
        shutil.copyfile(ir_xml, tmp / "model.xml")
        shutil.copyfile(ir_xml.with_suffix(".bin"), tmp / "model.bin")
        shutil.copyfile(tokenizer_dir / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
        write_json(tmp / LABELS_FILE, {"labels": list(labels) if labels else None, "problem_type": problem_type,
                                       "max_length": max_length})
        write_json(tmp / CONFIG_FILE, dict(compile_config))
        # Hash the copies, not the sources: the manifest vouches for what is in the bundle.
        manifest = {"format": FORMAT, **info, "files": {name: sha256_file(tmp / name) for name in REQUIRED}}
        write_json(tmp / MANIFEST_FILE, manifest)
    return manifest
