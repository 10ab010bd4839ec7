"""Run a kasp edge bundle with only the runtime wheels its requirements.txt names (no torch, no kasp).

    python runner.py --text "great sound" [--pair "second sentence"]      # from inside the bundle folder
    python -m deploy.runner BUNDLE --jsonl rows.jsonl                     # rows: {"text": ..., "text_pair": ...}
    python -m deploy.runner BUNDLE --show-info                            # manifest (minus hashes), load time

    from deploy.runner import Bundle
    Bundle("bundle/").predict(["great sound"])  # [{"label": "positive", "probs": {...}}] or [{"score": 0.7}]

A bundle is one of three engines, named in manifest.json: `openvino-text` (the tokenizer fused into
the IR by openvino-tokenizers: strings in, logits out; needs openvino + openvino-tokenizers),
`openvino` (token ids in; openvino + tokenizers) and `onnxruntime` (onnxruntime + tokenizers). Every
file is checked against manifest.json before anything is compiled: a changed or missing file, or a
required file the manifest does not list, raises BundleError. This file is copied into every bundle,
so it imports nothing from kasp and only the runtime of the bundle it opens.
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

FORMAT = "kasp-bundle/2"
LABELS_FILE, CONFIG_FILE, MANIFEST_FILE = "labels.json", "runtime_config.json", "manifest.json"
TOKENIZER_FILE, RUNNER_FILE, REQUIREMENTS_FILE = "tokenizer.json", "runner.py", "requirements.txt"
COMMON = (LABELS_FILE, CONFIG_FILE, RUNNER_FILE, REQUIREMENTS_FILE)
# engine -> the files it reads besides COMMON
ENGINE_FILES = {"openvino-text": ("model.xml", "model.bin"), "openvino": ("model.xml", "model.bin", TOKENIZER_FILE),
                "onnxruntime": ("model.onnx", TOKENIZER_FILE)}
TEXT_INPUTS = ("text", "text_pair")
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
        manifest = json.loads((root / MANIFEST_FILE).read_text())
    except (OSError, ValueError) as e:
        raise BundleError(f"{root}: cannot read {MANIFEST_FILE} ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{root}: {MANIFEST_FILE} is not {FORMAT}")
    if manifest.get("engine") not in ENGINE_FILES:
        raise BundleError(f"{root}: unknown engine {manifest.get('engine')!r}; known: {', '.join(ENGINE_FILES)}")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise BundleError(f"{root}: {MANIFEST_FILE} has no files map")
    for name in (*COMMON, *ENGINE_FILES[manifest["engine"]]):
        if name not in files:
            raise BundleError(f"{root}: {name} is not listed in {MANIFEST_FILE}")
    for name, digest in files.items():
        path = root / name
        if Path(name).name != name or not path.is_file():  # a listed path must not point outside the bundle
            raise BundleError(f"{root}: {name} is missing or not a plain file name")
        if _sha256(path) != digest:
            raise BundleError(f"{root}: {name} does not match its sha256 in {MANIFEST_FILE}")
    return manifest


def _tokenizer(path: Path, max_length: int):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(max_length=max_length)  # default longest_first, as transformers' truncation=True
    pad = tok.padding or {}
    # save_pretrained does not record padding in tokenizer.json; the pad id only fills masked slots anyway.
    pad_token = pad.get("pad_token") or next((t for t in ("[PAD]", "<pad>") if tok.token_to_id(t) is not None),
                                             "[PAD]")
    tok.enable_padding(pad_id=pad.get("pad_id", tok.token_to_id(pad_token) or 0), pad_token=pad_token)
    return tok


def _encoder(root: Path, max_length: int, names: list[str]):
    tok = _tokenizer(root / TOKENIZER_FILE, max_length)

    def encode(texts, pairs):
        enc = tok.encode_batch(list(zip(texts, pairs)) if pairs is not None else list(texts))
        arrays = {"input_ids": [e.ids for e in enc], "attention_mask": [e.attention_mask for e in enc],
                  "token_type_ids": [e.type_ids for e in enc]}
        return {n: np.asarray(arrays[n], dtype=np.int64) for n in names}

    return encode


def _ov_compile(root: Path, config: dict, device: str, threads: int | None):
    import openvino as ov

    if threads:  # the bundle does not fix a thread count: the device it lands on decides
        config = {**config, "INFERENCE_NUM_THREADS": str(threads)}
    try:
        return ov.Core().compile_model(str(root / "model.xml"), device, config)
    except RuntimeError as e:  # OpenVINO nests a C++ trace; its last line is the cause (e.g. an unknown property)
        cause = [line for line in str(e).splitlines() if line.strip()][-1:] or ["unknown error"]
        raise BundleError(f"{root}: cannot compile model.xml on {device} with {CONFIG_FILE}: {cause[0]}") from e


def _port_names(ports, known, root: Path) -> list[str]:
    """A model's inputs by name: exporters differ on whether token_type_ids survives."""
    names = []
    for port in ports:
        hit = [n for n in port.get_names() if n in known]
        if not hit:
            raise BundleError(f"{root}: the model has an unexpected input {port.get_any_name()!r}")
        names.append(hit[0])
    return names


def _openvino_text(root: Path, config: dict, max_length: int, device: str, threads: int | None):
    try:
        import openvino_tokenizers  # noqa: F401  registers the tokenizer ops the fused IR uses
    except ImportError:
        raise BundleError(f"{root}: this bundle's IR has the tokenizer fused in; pip install the "
                          f"openvino-tokenizers named in {REQUIREMENTS_FILE}") from None
    compiled = _ov_compile(root, config, device, threads)
    names, request = _port_names(compiled.inputs, TEXT_INPUTS, root), compiled.create_infer_request()

    def run(texts, pairs):
        if (pairs is not None) != ("text_pair" in names):
            raise ValueError("this model takes text pairs" if pairs is None else "this model takes single texts")
        feed = {"text": np.array(texts, dtype=str)}
        if pairs is not None:
            feed["text_pair"] = np.array(pairs, dtype=str)
        return np.array(request.infer(feed)[compiled.output(0)], dtype=np.float32)  # copy: the request reuses it

    return run, names


def _openvino(root: Path, config: dict, max_length: int, device: str, threads: int | None):
    compiled = _ov_compile(root, config, device, threads)
    names, request = _port_names(compiled.inputs, INPUTS, root), compiled.create_infer_request()
    encode = _encoder(root, max_length, names)
    return (lambda texts, pairs: np.array(request.infer(encode(texts, pairs))[compiled.output(0)], np.float32)), names


def _onnxruntime(root: Path, config: dict, max_length: int, device: str, threads: int | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    providers = config.get("providers", ["CPUExecutionProvider"])
    missing = [p for p in providers if p not in ort.get_available_providers()]
    if missing:  # onnxruntime would fall back to the CPU without a word
        raise BundleError(f"{root}: provider(s) {missing} from {CONFIG_FILE} are not in this onnxruntime build "
                          f"({ort.get_available_providers()})")
    sess = ort.InferenceSession(str(root / "model.onnx"), opts, providers=providers)
    names = [i.name for i in sess.get_inputs()]
    if bad := [n for n in names if n not in INPUTS]:
        raise BundleError(f"{root}: model.onnx has unexpected inputs {bad}")
    encode = _encoder(root, max_length, names)
    return (lambda texts, pairs: sess.run(["logits"], encode(texts, pairs))[0].astype(np.float32)), names


ENGINES = {"openvino-text": _openvino_text, "openvino": _openvino, "onnxruntime": _onnxruntime}


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)  # shift so exp never overflows
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class Bundle:
    """A verified, loaded bundle. One infer request is reused: share a Bundle across threads only with a lock."""

    def __init__(self, path, device: str = "CPU", threads: int | None = None):
        t0 = time.perf_counter()
        self.path = Path(path)
        self.manifest = verify(self.path)
        meta = json.loads((self.path / LABELS_FILE).read_text())
        self.labels, self.problem_type = meta.get("labels"), meta.get("problem_type")
        if self.problem_type != "regression" and self.problem_type not in CLASSIFICATION:
            raise BundleError(f"{self.path}: {LABELS_FILE} has unknown problem_type {self.problem_type!r}")
        self.max_length = meta.get("max_length")
        if not isinstance(self.max_length, int) or self.max_length < 2:
            raise BundleError(f"{self.path}: {LABELS_FILE} has a bad max_length {self.max_length!r}")
        config = json.loads((self.path / CONFIG_FILE).read_text())
        self._run, self.input_names = ENGINES[self.manifest["engine"]](self.path, config, self.max_length, device,
                                                                       threads)
        self.load_seconds = time.perf_counter() - t0

    def logits(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 32) -> np.ndarray:
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs")
        out = [self._run(texts[i:i + batch_size], pairs[i:i + batch_size] if pairs is not None else None)
               for i in range(0, len(texts), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.labels or [None])), np.float32)

    def answers(self, logits: np.ndarray) -> list[dict]:
        if self.problem_type == "regression":
            return [{"score": float(row[0])} for row in logits]
        names = self.labels or [f"LABEL_{i}" for i in range(logits.shape[-1])]
        probs = softmax(logits.astype(np.float64))
        return [{"label": names[int(p.argmax())], "probs": {n: float(x) for n, x in zip(names, p)}} for p in probs]

    def predict(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 32) -> list[dict]:
        return self.answers(self.logits(texts, pairs, batch_size))

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


def _predict_rows(bundle: Bundle, rows, batch_size: int):
    rows = iter(rows)  # streamed, so a large JSONL never sits in memory whole
    while batch := list(itertools.islice(rows, batch_size)):
        pairs = [p for _, p in batch]
        if any(p is None for p in pairs) and any(p is not None for p in pairs):
            # a mixed batch cannot be one call: run rows one by one to keep input order
            for t, p in batch:
                yield from bundle.predict([t], None if p is None else [p])
        else:
            yield from bundle.predict([t for t, _ in batch], None if pairs[0] is None else pairs, batch_size)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python runner.py", description=__doc__.split("\n")[0])
    ap.add_argument("bundle", type=Path, nargs="?", default=Path(__file__).resolve().parent,
                    help="bundle folder (default: the folder this file is in)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--text")
    src.add_argument("--jsonl", type=Path)
    ap.add_argument("--pair", help="second sentence for --text")
    ap.add_argument("--show-info", action="store_true", help="print the manifest and load time")
    ap.add_argument("--device", default="CPU", help="OpenVINO device (openvino engines)")
    ap.add_argument("--threads", type=int, default=None, help="inference threads (default: the runtime decides)")
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
