"""Run a kasp edge bundle with only the runtime wheels its requirements.txt names (no torch, no kasp).

    python runner.py --text "great sound" [--pair "second sentence"]      # from inside the bundle folder
    python -m pipeline.serving.runner BUNDLE --jsonl rows.jsonl           # rows: {"text": ..., "text_pair": ...}
    # each answer is one JSON line: its input line number, the answer, tokens kept and before truncation,
    # truncated, empty (docs/serving.md); a bad argument or JSONL line is an error naming it, nothing scored
    python -m pipeline.serving.runner BUNDLE --show-info                  # manifest (minus hashes), load time

    from pipeline.serving.runner import Bundle
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
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FORMAT = "kasp-bundle/2"
LABELS_FILE, CONFIG_FILE, MANIFEST_FILE = "labels.json", "runtime_config.json", "manifest.json"
TOKENIZER_FILE, RUNNER_FILE, REQUIREMENTS_FILE = "tokenizer.json", "runner.py", "requirements.txt"
COMMON = (LABELS_FILE, CONFIG_FILE, RUNNER_FILE, REQUIREMENTS_FILE)
# engine -> the files it reads besides COMMON
ENGINE_FILES = {
    "openvino-text": ("model.xml", "model.bin"),
    "openvino": ("model.xml", "model.bin", TOKENIZER_FILE),
    "onnxruntime": ("model.onnx", TOKENIZER_FILE),
}
TEXT_INPUTS = ("text", "text_pair")
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
CLASSIFICATION = ("classification", "single_label_classification")


class BundleError(ValueError):
    """The bundle is missing, malformed or does not match its manifest."""


def text_problem(value) -> str | None:
    """Why `value` cannot be scored as a text (not a string, not encodable as UTF-8, a NUL character), or None.
    An empty text is scorable: callers flag it (see Bundle.notes), they do not refuse it."""
    if not isinstance(value, str):
        return f"expected a string, got {type(value).__name__} {str(value)[:40]!r}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate: JSON "\ud800", or undecodable bytes in argv
        return f"not valid UTF-8 text: {e.reason} {value[e.start]!r} at character {e.start}"
    if (nul := value.find("\0")) >= 0:
        return f"a NUL character at character {nul}"
    return None


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
        raise BundleError(
            f"{root}: unknown engine {manifest.get('engine')!r}; known: {', '.join(ENGINE_FILES)}"
        )
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
    pad_token = pad.get("pad_token") or next(
        (t for t in ("[PAD]", "<pad>") if tok.token_to_id(t) is not None), "[PAD]"
    )
    tok.enable_padding(pad_id=pad.get("pad_id", tok.token_to_id(pad_token) or 0), pad_token=pad_token)
    return tok


def _encoder(root: Path, max_length: int, names: list[str]):
    """(encode, count): the model feed, and each row's token count before truncation."""
    tok = _tokenizer(root / TOKENIZER_FILE, max_length)
    whole = _tokenizer(root / TOKENIZER_FILE, max_length)
    whole.no_truncation()
    whole.no_padding()

    def encode(texts, pairs):
        enc = tok.encode_batch(list(zip(texts, pairs)) if pairs is not None else list(texts))
        arrays = {
            "input_ids": [e.ids for e in enc],
            "attention_mask": [e.attention_mask for e in enc],
            "token_type_ids": [e.type_ids for e in enc],
        }
        return {n: np.asarray(arrays[n], dtype=np.int64) for n in names}

    def count(texts, pairs):
        enc = whole.encode_batch(list(zip(texts, pairs)) if pairs is not None else list(texts))
        return np.array([len(e.ids) for e in enc], dtype=np.int64)

    return encode, count


def _ov_compile(root: Path, config: dict, device: str, threads: int | None):
    import openvino as ov

    if threads:  # the bundle does not fix a thread count: the device it lands on decides
        config = {**config, "INFERENCE_NUM_THREADS": str(threads)}
    try:
        return ov.Core().compile_model(str(root / "model.xml"), device, config)
    except (
        RuntimeError
    ) as e:  # OpenVINO nests a C++ trace; its last line is the cause (e.g. an unknown property)
        cause = [line for line in str(e).splitlines() if line.strip()][-1:] or ["unknown error"]
        raise BundleError(
            f"{root}: cannot compile model.xml on {device} with {CONFIG_FILE}: {cause[0]}"
        ) from e


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
        raise BundleError(
            f"{root}: this bundle's IR has the tokenizer fused in; pip install the "
            f"openvino-tokenizers named in {REQUIREMENTS_FILE}"
        ) from None
    compiled = _ov_compile(root, config, device, threads)
    names, request = _port_names(compiled.inputs, TEXT_INPUTS, root), compiled.create_infer_request()

    def feed(texts, pairs):
        if (pairs is not None) != ("text_pair" in names):
            raise ValueError(
                "this model takes text pairs" if pairs is None else "this model takes single texts"
            )
        feed = {"text": np.array(texts, dtype=str)}
        if pairs is not None:
            feed["text_pair"] = np.array(pairs, dtype=str)
        return feed

    def run(texts, pairs):
        return np.array(
            request.infer(feed(texts, pairs))[compiled.output(0)], dtype=np.float32
        )  # a copy: reused

    # built at the first count: predict() alone (e.g. tools.diagnostics.startup's first answer) never pays for it
    counter = []

    def count(texts, pairs):
        if not counter:
            counter.append(_fused_token_counter(root, device, threads))
        return counter[0](feed(texts, pairs))

    return run, names, count


def _fused_token_counter(root: Path, device: str, threads: int | None):
    """Token counts before truncation from the tokenizer fused into the IR: its attention_mask, run as a model
    of its own with openvino-tokenizers' `truncation` state set to False."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(root / "model.xml"))
    mask = [o for op in model.get_ordered_ops() for o in op.outputs() if "attention_mask" in o.get_names()]
    if len(mask) != 1:
        raise BundleError(
            f"{root}: model.xml has {len(mask)} tensors named attention_mask, not 1: cannot count tokens"
        )
    tokens = ov.Model(mask, model.get_parameters(), "tokens")
    tokens.add_sinks(model.get_sinks())
    with tempfile.TemporaryDirectory() as tmp:
        # Saved and read back: a model cut from another's nodes crashed the interpreter at exit (OpenVINO
        # 2026.4 with openvino-tokenizers), one read from disk does not.
        ov.save_model(tokens, f"{tmp}/tokens.xml", compress_to_fp16=False)
        del model, tokens, mask
        config = {"INFERENCE_NUM_THREADS": str(threads)} if threads else {}
        request = core.compile_model(
            core.read_model(f"{tmp}/tokens.xml"), device, config
        ).create_infer_request()
    states = [s for s in request.query_state() if s.name == "truncation"]
    if len(states) != 1:
        raise BundleError(f"{root}: the fused tokenizer has no `truncation` state: cannot count tokens")
    states[0].state = ov.Tensor(np.array([False]))  # kept by the request: every call counts the whole text

    return lambda feed: request.infer(feed)[0].sum(axis=1).astype(np.int64)


def _openvino(root: Path, config: dict, max_length: int, device: str, threads: int | None):
    compiled = _ov_compile(root, config, device, threads)
    names, request = _port_names(compiled.inputs, INPUTS, root), compiled.create_infer_request()
    encode, count = _encoder(root, max_length, names)
    return (
        (lambda texts, pairs: np.array(request.infer(encode(texts, pairs))[compiled.output(0)], np.float32)),
        names,
        count,
    )


def _onnxruntime(root: Path, config: dict, max_length: int, device: str, threads: int | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    providers = config.get("providers", ["CPUExecutionProvider"])
    missing = [p for p in providers if p not in ort.get_available_providers()]
    if missing:  # onnxruntime would fall back to the CPU without a word
        raise BundleError(
            f"{root}: provider(s) {missing} from {CONFIG_FILE} are not in this onnxruntime build "
            f"({ort.get_available_providers()})"
        )
    sess = ort.InferenceSession(str(root / "model.onnx"), opts, providers=providers)
    names = [i.name for i in sess.get_inputs()]
    if bad := [n for n in names if n not in INPUTS]:
        raise BundleError(f"{root}: model.onnx has unexpected inputs {bad}")
    encode, count = _encoder(root, max_length, names)
    return (
        (lambda texts, pairs: sess.run(["logits"], encode(texts, pairs))[0].astype(np.float32)),
        names,
        count,
    )


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
        self._run, self.input_names, self._count = ENGINES[self.manifest["engine"]](
            self.path, config, self.max_length, device, threads
        )
        self.load_seconds = time.perf_counter() - t0

    def logits(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 32) -> np.ndarray:
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs")
        out = [
            self._run(texts[i : i + batch_size], pairs[i : i + batch_size] if pairs is not None else None)
            for i in range(0, len(texts), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, len(self.labels or [None])), np.float32)

    def token_counts(
        self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 32
    ) -> np.ndarray:
        """Each row's token count before truncation to max_length (special tokens included)."""
        out = [
            self._count(texts[i : i + batch_size], pairs[i : i + batch_size] if pairs is not None else None)
            for i in range(0, len(texts), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def notes(self, texts: list[str], pairs: list[str] | None, counts: np.ndarray) -> list[dict]:
        """Per row: tokens kept, tokens before truncation, and whether the text was truncated or empty."""
        pairs = pairs if pairs is not None else [None] * len(texts)
        return [
            {
                "tokens": min(int(n), self.max_length),
                "tokens_in": int(n),
                "truncated": int(n) > self.max_length,
                "empty": not t.strip() or (p is not None and not p.strip()),
            }
            for t, p, n in zip(texts, pairs, counts)
        ]

    def answers(self, logits: np.ndarray) -> list[dict]:
        if self.problem_type == "regression":
            return [{"score": float(row[0])} for row in logits]
        names = self.labels or [f"LABEL_{i}" for i in range(logits.shape[-1])]
        probs = softmax(logits.astype(np.float64))
        return [
            {"label": names[int(p.argmax())], "probs": {n: float(x) for n, x in zip(names, p)}} for p in probs
        ]

    def predict(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 32) -> list[dict]:
        return self.answers(self.logits(texts, pairs, batch_size))

    def info(self) -> dict:
        return {**{k: v for k, v in self.manifest.items() if k != "files"}, "load_seconds": self.load_seconds}


MAX_REPORTED = 20  # bad JSONL lines listed before "and N more"


def _jsonl_row(line: str, where: str) -> tuple[str, str | None]:
    """(text, text_pair) from one JSONL line, or ValueError naming `where` and the fault."""
    try:
        row = json.loads(line)
    except ValueError as e:
        raise ValueError(f"{where}: not JSON ({e})") from None
    if not isinstance(row, dict) or "text" not in row:
        raise ValueError(f"{where}: a row must be an object with a 'text'")
    text, pair = row["text"], row.get("text_pair")
    for key, value in (("text", text), ("text_pair", pair)):
        if (key == "text" or value is not None) and (problem := text_problem(value)):
            raise ValueError(f"{where}: {key!r}: {problem}")
    return text, pair


def read_jsonl(path: Path) -> list[tuple[int, str, str | None]]:
    """Every row of a JSONL file as (line number, text, text_pair), read in full and checked before anything
    is scored: one ValueError lists every bad line (the first MAX_REPORTED), so no good row is answered
    and then lost behind a bad one. Blank lines are skipped; output rows carry their line numbers."""
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ValueError(
            f"{path}:{line}: not UTF-8 ({e.reason}: byte 0x{raw[e.start]:02x} at offset {e.start})"
        ) from None
    rows, bad = [], []
    for n, line in enumerate(content.split("\n"), 1):  # not splitlines: U+2028 may sit inside a JSON string
        if line.strip():
            try:
                rows.append((n, *_jsonl_row(line, f"{path}:{n}")))
            except ValueError as e:
                bad.append(str(e))
    if bad:
        more = f"\n... and {len(bad) - MAX_REPORTED} more bad lines" if len(bad) > MAX_REPORTED else ""
        raise ValueError(f"{len(bad)} bad line(s), nothing scored:\n" + "\n".join(bad[:MAX_REPORTED]) + more)
    return rows


def cli_text(value: str, flag: str) -> str:
    """An argv text, or ValueError naming the flag and the cause (for bytes that are not UTF-8, the byte)."""
    if (problem := text_problem(value)) is None:
        return value
    try:  # argv bytes that are not UTF-8 reach Python as lone surrogates (surrogateescape): get them back
        value.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeDecodeError as e:
        problem = f"not UTF-8: {e.reason}, byte 0x{e.object[e.start]:02x} at byte {e.start}"
    except UnicodeEncodeError:
        pass  # a surrogate that no byte maps to: text_problem's reason stands
    raise ValueError(f"{flag}: {problem}")


def score_rows(bundle: Bundle, rows: list[tuple[int, str, str | None]], batch_size: int):
    """Yield one answer per row, in input order, each with its line number and notes (tokens, truncated, empty).
    Single texts and pairs are scored in separate calls: one model call takes one kind."""
    for start in range(0, len(rows), batch_size):
        chunk, out = rows[start : start + batch_size], {}
        for pair_rows in (False, True):
            part = [r for r in chunk if (r[2] is not None) == pair_rows]
            if not part:
                continue
            texts, pairs = [t for _, t, _ in part], [p for *_, p in part] if pair_rows else None
            answers = bundle.predict(texts, pairs, batch_size)
            notes = bundle.notes(texts, pairs, bundle.token_counts(texts, pairs, batch_size))
            for (n, *_), answer, note in zip(part, answers, notes):
                out[n] = {"line": n, **answer, **note}
        yield from (out[n] for n, *_ in chunk)


def _say_notes(answer: dict, where: str) -> None:
    if answer["empty"]:
        print(f"warning: {where}: empty text, scored as is", file=sys.stderr)
    if answer["truncated"]:
        print(
            f"warning: {where}: truncated to {answer['tokens']} of {answer['tokens_in']} tokens",
            file=sys.stderr,
        )


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python runner.py", description=__doc__.split("\n")[0])
    ap.add_argument(
        "bundle",
        type=Path,
        nargs="?",
        default=Path(__file__).resolve().parent,
        help="bundle folder (default: the folder this file is in)",
    )
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--text")
    src.add_argument("--jsonl", type=Path, help='one JSON object per line: {"text": ..., "text_pair": ...}')
    ap.add_argument("--pair", help="second sentence for --text")
    ap.add_argument("--show-info", action="store_true", help="print the manifest and load time")
    ap.add_argument("--device", default="CPU", help="OpenVINO device (openvino engines)")
    ap.add_argument(
        "--threads", type=int, default=None, help="inference threads (default: the runtime decides)"
    )
    ap.add_argument("--batch-size", type=int, default=32, help="rows per model call (>= 1)")
    return ap


def _check_args(ap: argparse.ArgumentParser, args) -> None:
    """Every argument checked before the bundle is opened: a bad one is an error naming it, exit 2."""
    if args.text is None and args.jsonl is None and not args.show_info:
        ap.error("give --text, --jsonl or --show-info")
    if args.pair is not None and args.text is None:
        ap.error("--pair goes with --text")
    if args.batch_size < 1:
        ap.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads must be >= 1, got {args.threads}")
    if not args.device.strip():
        ap.error("--device is empty")
    if args.jsonl is not None and not args.jsonl.is_file():
        ap.error(f"--jsonl {args.jsonl}: no such file")
    for flag, value in (("--text", args.text), ("--pair", args.pair)):
        if value is not None:
            try:
                cli_text(value, flag)
            except ValueError as e:
                ap.error(str(e))


def main(argv=None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    _check_args(ap, args)
    try:
        rows = (
            [(0, args.text, args.pair)]
            if args.text is not None
            else read_jsonl(args.jsonl)
            if args.jsonl
            else []
        )
        bundle = Bundle(args.bundle, args.device, args.threads)
        if args.show_info:  # to stderr when predicting, so stdout stays one line per input
            print(json.dumps(bundle.info()), file=sys.stderr if rows or args.jsonl else sys.stdout)
        for answer in score_rows(bundle, rows, args.batch_size):
            if args.text is not None:
                del answer["line"]
            _say_notes(answer, "--text" if args.text is not None else f"{args.jsonl}:{answer.get('line')}")
            print(json.dumps(answer), flush=True)
    except (BundleError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
