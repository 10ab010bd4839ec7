"""Fixtures for the server tests: a string-in (openvino-text) bundle of the tiny random BERT, built in
seconds without the pipeline, and one pipeline.serving.server process on a free 127.0.0.1 port serving it.

Import the fixtures into a test module: `from tests.serving import served, text_bundle  # noqa: F401`.
"""

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

MAX_LENGTH = 32  # short, so a sentence of a few dozen words is truncated
LABELS = ["negative", "positive"]


def build_text_bundle(model_dir: Path, out: Path) -> Path:
    """The tiny BERT as a 2-label classifier, its tokenizer fused in front of the IR, as deploy ships it."""
    import openvino as ov
    import torch
    from transformers import BertForSequenceClassification

    from pipeline.serving.bundle import write_bundle
    from pipeline.serving.tokenizer import convert, fuse
    from tests.test_bundle import export_ir

    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(model_dir, num_labels=2).eval()
    xml = export_ir(model, out)
    tokenizer, _ = convert(model_dir, False, MAX_LENGTH)
    ov.save_model(fuse(tokenizer, xml), str(out / "fused.xml"), compress_to_fp16=False)
    write_bundle(
        out / "bundle",
        "openvino-text",
        {"model.xml": out / "fused.xml", "model.bin": out / "fused.bin"},
        None,
        labels=LABELS,
        problem_type="classification",
        max_length=MAX_LENGTH,
        runtime_config={"INFERENCE_PRECISION_HINT": "f32"},
        info={"model": "student"},
    )
    return out / "bundle"


@pytest.fixture(scope="session")
def text_bundle(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny bundle; KASP_SERVE_BUNDLE=bundles/student serves a real string-in single-sentence bundle instead
    (the load test's figures for a real model: pytest -s tests/test_server_conformance.py -k 1000)."""
    import os

    if real := os.environ.get("KASP_SERVE_BUNDLE"):
        return Path(real).resolve()
    return build_text_bundle(tiny_model_dir, tmp_path_factory.mktemp("text_bundle"))


@dataclass
class Served:
    url: str  # http://127.0.0.1:<port>
    host: str  # 127.0.0.1:<port>, as tritonclient takes it
    bundle: Path
    log: object  # the server's log file, open for reading

    def log_text(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()


@pytest.fixture(scope="session")
def served(text_bundle):
    """pipeline.serving.server on the text bundle, one inference thread, for the whole session."""
    from tools.diagnostics import loadtest

    port = loadtest.free_port()
    with tempfile.TemporaryFile("w+") as log:
        proc = loadtest.start_server(text_bundle, "student", port, 1, 90, log)
        try:
            yield Served(f"http://127.0.0.1:{port}", f"127.0.0.1:{port}", text_bundle, log)
        finally:
            proc.terminate()
            proc.wait(30)
