"""Edge bundle: parity with PyTorch, tamper refusal, the CLI, no torch at run time, atomic writes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.serving.bundle import write_bundle
from pipeline.serving.runner import Bundle, BundleError, softmax
from tests.conftest import ROOT, demo_rows

MAX_LENGTH = 64
F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # bf16 (the default on AMX CPUs) drifts ~1%: parity needs f32
SENTENCES = [row.split("\t")[0] for row in demo_rows("dev", 6)]
INFO = {"model": "tiny-bert", "precision": "fp32", "sparsity": 0.0}


def export_ir(model, out: Path) -> Path:
    import openvino as ov
    import torch

    ids = torch.ones(2, 8, dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"logits": {0: "batch"}}
    torch.onnx.export(
        model,
        (ids, torch.ones_like(ids), torch.zeros_like(ids)),
        str(out / "model.onnx"),
        input_names=names,
        output_names=["logits"],
        dynamic_axes=axes,
        opset_version=17,
        dynamo=False,
    )
    xml = out / "ir" / "model.xml"
    xml.parent.mkdir()
    ov.save_model(ov.convert_model(str(out / "model.onnx")), str(xml), compress_to_fp16=False)
    return xml


def ir_files(xml: Path) -> dict:
    return {"model.xml": xml, "model.bin": xml.with_suffix(".bin")}


@pytest.fixture(scope="module")
def built(tiny_model_dir, tmp_path_factory):
    """(torch model, HF tokenizer, bundle dir) for a 2-label classifier."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    out = tmp_path_factory.mktemp("bundle")
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.save_pretrained(out / "tok")
    xml = export_ir(model, out)
    write_bundle(
        out / "bundle",
        "openvino",
        ir_files(xml),
        out / "tok",
        labels=["negative", "positive"],
        problem_type="classification",
        max_length=MAX_LENGTH,
        runtime_config=F32,
        info=INFO,
    )
    return model, tok, out / "bundle"


@pytest.fixture(scope="module")
def bundle(built):
    return Bundle(built[2])


def torch_logits(model, tok, texts, pairs=None):
    import torch

    enc = tok(texts, pairs, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits.numpy()


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.serving.runner", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def tampered(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    edit(dst)
    return dst


# --- writer ---------------------------------------------------------------------------------------------------


def test_manifest_lists_every_file_with_its_hash(built):
    from pipeline.core.common import sha256_file

    root = built[2]
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["format"] == "kasp-bundle/2" and manifest["model"] == "tiny-bert"
    assert manifest["engine"] == "openvino" and (root / "runner.py").read_text().startswith('"""Run a kasp')
    assert [r.split("==")[0] for r in manifest["requirements"]] == ["numpy", "openvino", "tokenizers"]
    assert (root / "requirements.txt").read_text().split() == manifest["requirements"]
    assert set(manifest["files"]) == {p.name for p in root.iterdir()} - {"manifest.json"}
    assert all(sha256_file(root / n) == h for n, h in manifest["files"].items())
    assert json.loads((root / "labels.json").read_text()) == {
        "labels": ["negative", "positive"],
        "problem_type": "classification",
        "max_length": MAX_LENGTH,
    }
    assert json.loads((root / "runtime_config.json").read_text()) == F32


def test_missing_tokenizer_leaves_nothing_behind(built, tmp_path):
    xml = built[2] / "model.xml"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        write_bundle(
            tmp_path / "out",
            "openvino",
            ir_files(xml),
            tmp_path / "nowhere",
            labels=None,
            problem_type="regression",
            max_length=MAX_LENGTH,
            runtime_config={},
            info={},
        )
    assert list(tmp_path.iterdir()) == []


def test_failure_while_writing_leaves_nothing_behind(built, tmp_path):
    tok_dir = built[2]  # holds a tokenizer.json, which is all the writer reads from the tokenizer dir
    with pytest.raises(TypeError):  # not JSON-serialisable: fails inside the atomic block, after the copies
        write_bundle(
            tmp_path / "out",
            "openvino",
            ir_files(built[2] / "model.xml"),
            tok_dir,
            labels=None,
            problem_type="regression",
            max_length=MAX_LENGTH,
            runtime_config={},
            info={"bad": object()},
        )
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_non_string_compile_config(built, tmp_path):
    with pytest.raises(TypeError, match="CPU_SPARSE"):
        write_bundle(
            tmp_path / "out",
            "openvino",
            ir_files(built[2] / "model.xml"),
            built[2],
            labels=None,
            problem_type="regression",
            max_length=MAX_LENGTH,
            runtime_config={"CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE": 0.88},
            info={},
        )
    assert not (tmp_path / "out").exists()


# --- runner ---------------------------------------------------------------------------------------------------


def test_logits_match_torch_single_sentences(built, bundle):
    model, tok, _ = built
    assert bundle.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    np.testing.assert_allclose(
        bundle.logits(SENTENCES, batch_size=4), torch_logits(model, tok, SENTENCES), atol=1e-4
    )


def test_logits_match_torch_pairs(built, bundle):
    model, tok, _ = built
    pairs = SENTENCES[1:] + SENTENCES[:1]
    ours = bundle.logits(SENTENCES, pairs)
    np.testing.assert_allclose(ours, torch_logits(model, tok, SENTENCES, pairs), atol=1e-4)
    assert not np.allclose(
        ours, bundle.logits(SENTENCES), atol=1e-4
    )  # token types / second segment really used


def test_long_input_is_truncated_like_transformers(built, bundle):
    model, tok, _ = built
    long = [" ".join(SENTENCES * 4)]
    np.testing.assert_allclose(bundle.logits(long), torch_logits(model, tok, long), atol=1e-4)


def test_predict_classification(bundle):
    preds = bundle.predict(SENTENCES, batch_size=4)
    probs = softmax(bundle.logits(SENTENCES).astype(np.float64))
    assert len(preds) == len(SENTENCES)
    for pred, p in zip(preds, probs):
        assert set(pred["probs"]) == {"negative", "positive"}
        assert abs(sum(pred["probs"].values()) - 1) < 1e-9
        assert pred["label"] == ["negative", "positive"][int(p.argmax())]
    assert bundle.load_seconds > 0 and "files" not in bundle.info()


def test_softmax_is_stable():
    p = softmax(np.array([[1000.0, 0.0], [-1000.0, -1000.0]]))
    np.testing.assert_allclose(p, [[1.0, 0.0], [0.5, 0.5]])


def rewritten(src: Path, dst: Path, name: str, obj) -> Path:
    """A copy of the bundle with one file replaced and its manifest hash updated: valid, just different."""
    from pipeline.core.common import sha256_file

    root = tampered(src, dst, lambda d: (d / name).write_text(json.dumps(obj)))
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"][name] = sha256_file(root / name)
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_regression_bundle_scores(built, tmp_path):
    root = rewritten(
        built[2],
        tmp_path / "reg",
        "labels.json",
        {"labels": None, "problem_type": "regression", "max_length": 8},
    )
    reg = Bundle(root)
    preds = reg.predict(SENTENCES[:2])
    assert [p["score"] for p in preds] == pytest.approx(reg.logits(SENTENCES[:2])[:, 0].tolist())


def test_bad_compile_config_is_a_one_line_bundle_error(built, tmp_path):
    root = rewritten(built[2], tmp_path / "b", "runtime_config.json", {"NO_SUCH_PROPERTY": "1"})
    with pytest.raises(BundleError, match="NO_SUCH_PROPERTY") as err:
        Bundle(root)
    assert "\n" not in str(err.value)


def _flip_bin(d):
    data = bytearray((d / "model.bin").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (d / "model.bin").write_bytes(bytes(data))


def _unlist_tokenizer(d):
    m = json.loads((d / "manifest.json").read_text())
    del m["files"]["tokenizer.json"]
    (d / "manifest.json").write_text(json.dumps(m))


def _edit_labels(d):
    (d / "labels.json").write_text(
        json.dumps(
            {"labels": ["positive", "negative"], "problem_type": "classification", "max_length": MAX_LENGTH}
        )
    )


@pytest.mark.parametrize(
    "edit,name",
    [
        (_flip_bin, "model.bin"),
        (_unlist_tokenizer, "tokenizer.json"),
        (_edit_labels, "labels.json"),
        (lambda d: (d / "runtime_config.json").unlink(), "runtime_config.json"),
        (lambda d: (d / "runner.py").write_text("print('not kasp')"), "runner.py"),
    ],
)
def test_tampered_bundle_is_refused(built, tmp_path, monkeypatch, edit, name):
    import openvino as ov

    def no_compile(*a, **k):
        raise AssertionError("compiled a tampered bundle")

    monkeypatch.setattr(ov.Core, "compile_model", no_compile)  # the refusal must come before any compile
    root = tampered(built[2], tmp_path / "b", edit)
    with pytest.raises(BundleError, match=name.replace(".", r"\.")):
        Bundle(root)


def test_cli_text_and_pair(built):
    for extra in ([], ["--pair", SENTENCES[1]]):
        res = run_cli(built[2], "--text", SENTENCES[0], *extra)
        assert res.returncode == 0, res.stderr
        lines = res.stdout.splitlines()
        assert len(lines) == 1 and json.loads(lines[0])["label"] in ("negative", "positive")


def test_cli_jsonl_and_info(built, tmp_path):
    rows = [{"text": SENTENCES[0]}, {"text": SENTENCES[1], "text_pair": SENTENCES[2]}, {"text": SENTENCES[3]}]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = run_cli(built[2], "--jsonl", path, "--show-info")
    assert res.returncode == 0, res.stderr
    preds = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(preds) == 3 and all("probs" in p for p in preds)
    info = json.loads(
        res.stderr.strip().splitlines()[-1]
    )  # info goes to stderr so stdout is one line per row
    assert info["model"] == "tiny-bert" and "files" not in info and info["load_seconds"] > 0


def test_cli_refuses_tampered_bundle(built, tmp_path):
    root = tampered(built[2], tmp_path / "b", _flip_bin)
    res = run_cli(root, "--text", "hello")
    assert res.returncode != 0 and res.stdout == ""
    assert "model.bin" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_runner_needs_no_torch_or_transformers(built):
    # kasp's modules beyond the runner's own: its parent packages hold only a docstring (test_deps.py)
    code = (
        "import sys, pipeline.serving.runner as r; b = r.Bundle(sys.argv[1]); assert b.predict(['fine', 'bad'])\n"
        "own = {'pipeline', 'pipeline.serving', 'pipeline.serving.runner'}\n"
        "bad = [m for m in sys.modules if m in ('torch', 'transformers') or m.split('.')[0] in ('pipeline', 'tools')\n"
        "       and m not in own]\n"
        "assert not bad, bad"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(built[2])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert res.returncode == 0, res.stderr


def test_copied_bundle_runs_from_its_own_folder(built, tmp_path):
    """The folder alone: its runner.py, run from the folder with no kasp checkout on the path."""
    dst = shutil.copytree(built[2], tmp_path / "edge")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run(
        [sys.executable, "runner.py", "--text", SENTENCES[0]],
        cwd=dst,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["label"] == Bundle(built[2]).predict([SENTENCES[0]])[0]["label"]


def test_unknown_engine_and_wrong_files_are_refused(built, tmp_path):
    xml = built[2] / "model.xml"
    with pytest.raises(ValueError, match="engine 'tensorflow'"):
        write_bundle(
            tmp_path / "a",
            "tensorflow",
            ir_files(xml),
            built[2],
            labels=None,
            problem_type="regression",
            max_length=8,
            runtime_config={},
            info={},
        )
    with pytest.raises(ValueError, match="model.onnx"):
        write_bundle(
            tmp_path / "b",
            "onnxruntime",
            ir_files(xml),
            built[2],
            labels=None,
            problem_type="regression",
            max_length=8,
            runtime_config={"providers": ["CPUExecutionProvider"]},
            info={},
        )
    assert list(tmp_path.iterdir()) == []


# --- runner: no row lost, every argument checked (issue 27) ----------------------------------------------------


def write_rows(path: Path, rows: list, bad: dict | None = None) -> Path:
    """JSONL of {"text": ...} rows; `bad` maps 1-based line numbers to raw lines put there instead."""
    lines = [json.dumps({"text": t}) for t in rows]
    for n, raw in (bad or {}).items():
        lines[n - 1] = raw
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--batch-size", "0"],
            "--batch-size must be >= 1, got 0",
        ),  # was: exit 0, no output, 600 rows dropped
        (["--batch-size", "-1"], "--batch-size must be >= 1, got -1"),
        (["--threads", "0"], "--threads must be >= 1, got 0"),
        (["--device", " "], "--device is empty"),
    ],
)
def test_cli_refuses_a_bad_argument_before_anything_runs(built, tmp_path, args, message):
    res = run_cli(built[2], "--jsonl", write_rows(tmp_path / "rows.jsonl", SENTENCES * 100), *args)
    assert res.returncode != 0 and res.stdout == "" and message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_cli_refuses_undecodable_text_naming_the_byte(built):
    """`--text $'\\xff'` ended in a bare SystemError traceback."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-m", "pipeline.serving.runner", str(built[2]), "--text", b"caf\xe9"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=120,
    )
    stderr = res.stderr.decode()
    assert res.returncode != 0 and res.stdout == b"" and "Traceback" not in stderr
    assert "--text: not UTF-8" in stderr and "byte 0xe9 at byte 3" in stderr, stderr


def test_cli_bad_jsonl_line_is_named_and_nothing_is_scored(built, tmp_path):
    """A bad line 41 of 600 printed 32 answers, then the error: rows 33-40 were lost, unsaid."""
    path = write_rows(
        tmp_path / "rows.jsonl",
        SENTENCES * 100,
        {41: "{not json", 77: json.dumps({"text": 5}), 90: json.dumps({"text": "a\u0000b"})},
    )
    res = run_cli(built[2], "--jsonl", path)
    assert res.returncode == 1 and res.stdout == "", res.stdout[:300]
    assert "3 bad line(s), nothing scored" in res.stderr
    assert f"{path}:41: not JSON" in res.stderr and f"{path}:77: 'text': expected a string" in res.stderr
    assert f"{path}:90: 'text': a NUL character" in res.stderr and "Traceback" not in res.stderr


def test_cli_non_utf8_jsonl_names_the_line_and_byte(built, tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    res = run_cli(built[2], "--jsonl", path)
    assert res.returncode == 1 and res.stdout == ""
    assert f"{path}:2: not UTF-8" in res.stderr and "byte 0xe9" in res.stderr, res.stderr


def test_cli_answers_every_row_keyed_to_its_line(built, tmp_path, bundle):
    rows = SENTENCES * 100
    path = tmp_path / "rows.jsonl"
    path.write_text(
        "\n".join(json.dumps({"text": t}) + ("\n" if i % 7 == 3 else "") for i, t in enumerate(rows))
    )
    res = run_cli(built[2], "--jsonl", path, "--batch-size", "7")
    assert res.returncode == 0, res.stderr
    out = [json.loads(line) for line in res.stdout.splitlines()]
    lines = [n for n, line in enumerate(path.read_text().split("\n"), 1) if line.strip()]
    assert [o["line"] for o in out] == lines and len(out) == len(rows)
    assert [o["label"] for o in out] == [p["label"] for p in bundle.predict(rows)]


def test_cli_says_when_a_text_was_empty_or_truncated(built, tmp_path):
    """Both were scored without a word before issue 27."""
    long = " ".join(SENTENCES * 6)
    path = write_rows(tmp_path / "rows.jsonl", ["", long, SENTENCES[0]])
    res = run_cli(built[2], "--jsonl", path)
    assert res.returncode == 0, res.stderr
    empty, cut, plain = (json.loads(line) for line in res.stdout.splitlines())
    assert empty["empty"] and not empty["truncated"] and empty["tokens"] == 2  # [CLS] [SEP]
    assert cut["truncated"] and cut["tokens"] == MAX_LENGTH and cut["tokens_in"] > MAX_LENGTH
    assert (
        not plain["empty"] and not plain["truncated"] and plain["tokens"] == plain["tokens_in"] < MAX_LENGTH
    )
    assert f"{path}:1: empty text" in res.stderr
    assert f"{path}:2: truncated to {MAX_LENGTH} of {cut['tokens_in']} tokens" in res.stderr


def test_token_counts_are_the_hf_tokenizers_before_truncation(built, bundle):
    _, tok, _ = built
    texts = ["", SENTENCES[0], " ".join(SENTENCES * 6)]
    pairs = [SENTENCES[1]] * 3
    assert bundle.token_counts(texts).tolist() == [len(tok(t)["input_ids"]) for t in texts]
    assert bundle.token_counts(texts, pairs).tolist() == [
        len(tok(t, p)["input_ids"]) for t, p in zip(texts, pairs)
    ]


@pytest.mark.parametrize(
    "value,problem",
    [
        (5, "expected a string, got int"),
        (None, "got NoneType"),
        ("\ud800", "not valid UTF-8"),
        ("a\x00", "NUL character at character 1"),
        ("", None),
        ("élan 😀", None),
    ],
)
def test_text_problem(value, problem):
    from pipeline.serving.runner import text_problem

    got = text_problem(value)
    assert (got is None) if problem is None else (problem in got), got
