"""Run a kasp edge bundle with only openvino, tokenizers and numpy installed.

    python -m deploy.runner BUNDLE --text "great sound" [--pair "second sentence"]
    python -m deploy.runner BUNDLE --jsonl rows.jsonl     # rows: {"text": ..., "text_pair": ...}
    python -m deploy.runner BUNDLE --show-info            # manifest (minus file hashes) and load time

    from deploy.runner import Bundle
    Bundle("bundle/").predict(["great sound"])  # [{"label": "positive", "probs": {...}}] or [{"score": 0.7}]

Every file is checked against manifest.json before anything is compiled: a changed or missing file,
or a required file the manifest does not list, raises BundleError. Prediction output is one JSON object per input line on stdout.
This module must never import torch, transformers or the kasp pipeline: the edge box has none of them.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import openvino as ov
from tokenizers import Tokenizer

FORMAT = "kasp-bundle/1"
MODEL_FILES = ("model.xml", "model.bin")
TOKENIZER_FILE = "tokenizer.json"
LABELS_FILE = "labels.json"
CONFIG_FILE = "compile_config.json"
MANIFEST_FILE = "manifest.json"
REQUIRED = (*MODEL_FILES, TOKENIZER_FILE, LABELS_FILE, CONFIG_FILE)
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
CLASSIFICATION = ("classification", "single_label_classification")


class BundleError(ValueError):
    """The bundle is missing, malformed or does not match its manifest."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def verify(root: Path) -> dict:
    """Return the manifest once every listed file matches its hash and every required file is listed."""
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise BundleError(f"{root}: cannot read manifest.json ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{root}: manifest.json is not {FORMAT}")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise BundleError(f"{root}: manifest.json has no files map")
    for name in REQUIRED:
        if name not in files:
            raise BundleError(f"{root}: {name} is not listed in manifest.json")
    for name, digest in files.items():
        path = root / name
        if Path(name).name != name or not path.is_file():  # a listed path must not point outside the bundle
            raise BundleError(f"{root}: {name} is missing or not a plain file name")
        if _sha256(path) != digest:
            raise BundleError(f"{root}: {name} does not match its sha256 in manifest.json")
    return manifest


def _load_tokenizer(path: Path, max_length: int) -> Tokenizer:
    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(max_length=max_length)  # default longest_first, as transformers' truncation=True
    pad = tok.padding or {}
    # save_pretrained does not record padding in tokenizer.json; the pad id only fills masked slots anyway.
    pad_token = pad.get("pad_token") or next((t for t in ("[PAD]", "<pad>") if tok.token_to_id(t) is not None),
                                             "[PAD]")
    pad_id = pad.get("pad_id", tok.token_to_id(pad_token) or 0)
    tok.enable_padding(pad_id=pad_id, pad_token=pad_token)  # no length: pads to the longest in the batch
    return tok


def _compile(root: Path, device: str, threads: int | None):
    config = json.loads((root / "compile_config.json").read_text())
    if threads:  # the bundle does not fix a thread count: the device it lands on decides
        config["INFERENCE_NUM_THREADS"] = str(threads)
    try:
        return ov.Core().compile_model(str(root / "model.xml"), device, config)
    except RuntimeError as e:  # OpenVINO nests a C++ trace; its last line is the cause (e.g. an unknown property)
        cause = [line for line in str(e).splitlines() if line.strip()][-1:] or ["unknown error"]
        raise BundleError(f"{root}: cannot compile model.xml on {device} with compile_config.json: {cause[0]}") from e


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)  # shift so exp never overflows
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class Bundle:
    """A verified, compiled bundle. One infer request is reused: share a Bundle across threads only with a lock."""

    def __init__(self, path, device: str = "CPU", threads: int | None = None):
        t0 = time.perf_counter()
        self.path = Path(path)
        self.manifest = verify(self.path)
        meta = json.loads((self.path / "labels.json").read_text())
        self.labels, self.problem_type = meta.get("labels"), meta.get("problem_type")
        if self.problem_type != "regression" and self.problem_type not in CLASSIFICATION:
            raise BundleError(f"{self.path}: labels.json has unknown problem_type {self.problem_type!r}")
        self.max_length = meta.get("max_length")
        if not isinstance(self.max_length, int) or self.max_length < 2:
            raise BundleError(f"{self.path}: labels.json has a bad max_length {self.max_length!r}")
        self.tokenizer = _load_tokenizer(self.path / "tokenizer.json", self.max_length)
        self.compiled = _compile(self.path, device, threads)
        self.input_names = self._input_names()
        self.output = next((o for o in self.compiled.outputs if "logits" in o.get_names()), self.compiled.output(0))
        self.request = self.compiled.create_infer_request()
        self.load_seconds = time.perf_counter() - t0

    def _input_names(self) -> list[str]:
        """The IR's inputs by name: exporters differ on whether token_type_ids survives."""
        names = []
        for port in self.compiled.inputs:
            known = [n for n in port.get_names() if n in INPUTS]
            if not known:
                raise BundleError(f"{self.path}: model.xml has an unexpected input {port.get_any_name()!r}")
            names.append(known[0])
        return names

    def _encode(self, texts: list[str], pairs: list[str] | None) -> dict[str, np.ndarray]:
        items = list(zip(texts, pairs)) if pairs is not None else list(texts)
        enc = self.tokenizer.encode_batch(items)
        arrays = {"input_ids": [e.ids for e in enc], "attention_mask": [e.attention_mask for e in enc],
                  "token_type_ids": [e.type_ids for e in enc]}
        return {n: np.asarray(arrays[n], dtype=np.int64) for n in self.input_names}

    def logits(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 32) -> np.ndarray:
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs")
        out = []
        for i in range(0, len(texts), batch_size):
            feed = self._encode(texts[i:i + batch_size], pairs[i:i + batch_size] if pairs is not None else None)
            result = self.request.infer(feed)
            out.append(np.array(result[self.output], dtype=np.float32))  # copy: the request reuses it
        return np.concatenate(out) if out else np.zeros((0, len(self.labels or [None])), np.float32)

    def predict(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 32) -> list[dict]:
        logits = self.logits(texts, pairs, batch_size)
        if self.problem_type == "regression":
            return [{"score": float(row[0])} for row in logits]
        names = self.labels or [f"LABEL_{i}" for i in range(logits.shape[-1])]
        probs = softmax(logits.astype(np.float64))
        return [{"label": names[int(p.argmax())], "probs": {n: float(x) for n, x in zip(names, p)}} for p in probs]

    def info(self) -> dict:
        return {**{k: v for k, v in self.manifest.items() if k != "files"}, "load_seconds": self.load_seconds}


def _jsonl_rows(path: Path):
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{path}:{n}: not JSON ({e})") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise ValueError(f"{path}:{n}: a row needs a string 'text'")
            if not isinstance(row.get("text_pair", ""), (str, type(None))):
                raise ValueError(f"{path}:{n}: 'text_pair' must be a string")
            yield row["text"], row.get("text_pair")


def _batches(rows, size: int):
    """Stream the file so a large JSONL never sits in memory whole."""
    rows = iter(rows)
    while batch := list(itertools.islice(rows, size)):
        yield batch


def _predict_rows(bundle: Bundle, rows, batch_size: int):
    for batch in _batches(rows, batch_size):
        texts = [t for t, _ in batch]
        pairs = [p for _, p in batch]
        if any(p is None for p in pairs) and any(p is not None for p in pairs):
            # a mixed batch cannot be one encode_batch call: run rows one by one to keep input order
            for t, p in batch:
                yield from bundle.predict([t], None if p is None else [p])
        else:
            yield from bundle.predict(texts, None if pairs[0] is None else pairs, batch_size)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.runner", description=__doc__.split("\n")[0])
    ap.add_argument("bundle", type=Path)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--text")
    src.add_argument("--jsonl", type=Path)
    ap.add_argument("--pair", help="second sentence for --text")
    ap.add_argument("--show-info", action="store_true", help="print the manifest and load time")
    ap.add_argument("--device", default="CPU")
    ap.add_argument("--threads", type=int, default=None, help="inference threads (default: OpenVINO decides)")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args(argv)
    if args.text is None and args.jsonl is None and not args.show_info:
        ap.error("give --text, --jsonl or --show-info")
    if args.pair is not None and args.text is None:
        ap.error("--pair goes with --text")
    try:
        bundle = Bundle(args.bundle, args.device, args.threads)
        if args.show_info:  # to stderr when predicting, so stdout stays one line per input
            print(json.dumps(bundle.info()), file=sys.stdout if args.text is None and args.jsonl is None else sys.stderr)
        rows = [(args.text, args.pair)] if args.text is not None else _jsonl_rows(args.jsonl) if args.jsonl else []
        for pred in _predict_rows(bundle, rows, args.batch_size):
            print(json.dumps(pred), flush=True)
    except (BundleError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
