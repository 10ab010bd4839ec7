"""pipeline.serving.server: every element checked before batching, 4xx (never 5xx) for bad requests, a failure in a
batch kept to its own request, readiness, the Batcher, and a bounded 200-request concurrent load test whose
answers equal the bundle runner's. The real-client (tritonclient) conformance tests: test_server_conformance.py."""

import asyncio
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from pipeline.serving.server import LIMITS, Batcher
from pipeline.serving.v2request import BadRequest, decode, texts
from tests.conftest import ROOT
from tests.serving import served, text_bundle  # noqa: F401  (fixtures)
from tools.diagnostics import loadtest


def test_texts_accepts_texts_and_pairs():
    assert texts([("text", "BYTES", [2], ["a", ""])], False, LIMITS) == (["a", ""], None)
    assert texts([("text", "BYTES", [1], ["a"]), ("text_pair", "BYTES", [1], ["b"])], True, LIMITS) == (
        ["a"],
        ["b"],
    )


@pytest.mark.parametrize(
    "inputs,pairs,match",
    [
        ([("sentence", "BYTES", [1], ["a"])], False, "named"),
        ([("text", "INT64", [1], [1])], False, "datatype"),
        ([("text", "BYTES", [0], [])], False, "empty"),
        ([("text", "BYTES", [2], ["a"])], False, "shape"),
        ([("text", "BYTES", [1], ["x" * (LIMITS["max_chars"] + 1)])], False, "element 0: 2001 characters"),
        (
            [("text", "BYTES", [LIMITS["max_texts"] + 1], ["a"] * (LIMITS["max_texts"] + 1))],
            False,
            "over the limit",
        ),
        ([("text", "BYTES", [1], ["a"])], True, "named"),
        ([("text", "BYTES", [1], ["a"]), ("text", "BYTES", [1], ["b"])], False, "named"),
        ([("text", "BYTES", [2], ["a", "b"]), ("text_pair", "BYTES", [1], ["c"])], True, "text_pairs"),
        # accepted before issue 27: 5 was scored as the text "5", NUL as an empty text, a lone surrogate failed the batch
        ([("text", "BYTES", [2], ["good", 5])], False, "'text' element 1: expected a string, got int"),
        (
            [("text", "BYTES", [2], ["good", None])],
            False,
            "'text' element 1: expected a string, got NoneType",
        ),
        ([("text", "BYTES", [1], ["a\u0000"])], False, "'text' element 0: a NUL character at character 1"),
        ([("text", "BYTES", [2], ["ok", "\ud800"])], False, "'text' element 1: not valid UTF-8"),
        ([("text", "BYTES", [1], [["nested"]])], False, "element 0: expected a string, got list"),
        (
            [("text", "BYTES", [1], ["a"]), ("text_pair", "BYTES", [1], ["\udcff"])],
            True,
            "'text_pair' element 0",
        ),
    ],
)
def test_texts_names_the_input_and_element(inputs, pairs, match):
    with pytest.raises(BadRequest, match=match):
        texts(inputs, pairs, LIMITS)


def binary_body(values: list[bytes], declared: int | None = None, name: str = "text") -> tuple[bytes, str]:
    """(body, Inference-Header-Content-Length) of a binary-data request with BYTES elements as given."""
    data = b"".join(struct.pack("<I", len(v)) + v for v in values)
    spec = {
        "name": name,
        "shape": [len(values)],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": len(data) if declared is None else declared},
    }
    header = json.dumps({"inputs": [spec]}).encode()
    return header + data, str(len(header))


def test_decode_reads_json_and_binary_forms_alike():
    body, size = binary_body([b"a fine day", "é😀".encode()])
    got = decode(body, size).inputs[0]
    assert (got["name"], got["datatype"], got["shape"], got["data"]) == (
        "text",
        "BYTES",
        [2],
        ["a fine day", "é😀"],
    )
    js = decode(
        json.dumps(
            {"id": "r1", "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}
        ).encode(),
        None,
    )
    assert js.id == "r1" and js.inputs[0]["data"] == ["x"]


def _cut_prefix():
    body, size = binary_body([b"abc"], declared=6)  # declares 6 of the 7 bytes: the element is cut
    return body[:-1], size


@pytest.mark.parametrize(
    "make,match",
    [
        (
            lambda: (binary_body([b"ok"])[0], "abc"),
            "Inference-Header-Content-Length must be a byte count, got 'abc'",
        ),
        (lambda: (binary_body([b"ok"])[0], "-1"), "must be a byte count"),
        (lambda: (b"{}", "99"), "is 99 but the body has only 2 bytes"),
        (lambda: (struct.pack("<I", 50) + b"ab", None), "not UTF-8 JSON"),
        (lambda: _cut_prefix(), "input 'text' element 0: length prefix 3 is larger than the 2 bytes left"),
        (lambda: binary_body([b"ok", b"\xff\xfe"]), "input 'text' element 1: not UTF-8"),
        (
            lambda: binary_body([b"ok"], declared=100),
            "binary_data_size 100 but only 6 bytes",
        ),  # body short of its size
        (
            lambda: binary_body([b"ok"], declared=5),
            "element 0: length prefix 2 is larger than the 1 bytes left",
        ),
        (lambda: binary_body([b"ok"], declared=-1), "binary_data_size must be a byte count"),
        (lambda: binary_body([b"ok"], declared=2), "4-byte length prefix is cut off"),
        (
            lambda: (binary_body([b"ok"])[0] + b"extra", binary_body([b"ok"])[1]),
            "declare 6 bytes .* carries 11",
        ),
        (lambda: (b'{"inputs": [', None), "not UTF-8 JSON"),
        (lambda: (b'["a"]', None), "must be a JSON object"),
        (lambda: (b'{"inputs": []}', None), "non-empty 'inputs'"),
        (
            lambda: (b'{"inputs": [{"name": "text", "shape": "1", "datatype": "BYTES", "data": []}]}', None),
            "shape must",
        ),
        (lambda: (b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES"}]}', None), "no data"),
        (
            lambda: ('{"inputs": [{"name": "text", "data": ["\xff"]}]}'.encode("latin-1"), None),
            "not UTF-8 JSON",
        ),
    ],
)
def test_decode_refuses_malformed_bodies_naming_the_fault(make, match):
    body, size = make()
    with pytest.raises(BadRequest, match=match):
        decode(body, size)


def test_batcher_keeps_a_failure_to_the_request_that_caused_it():
    """Before issue 27 every request in the batch got the exception (8 of 8 good neighbours failed)."""
    calls = []

    def run(batch_texts, pairs):
        calls.append(list(batch_texts))
        if "boom" in batch_texts:
            raise RuntimeError("the model choked on boom")
        return (np.array([[len(t)] for t in batch_texts], np.float32),)

    async def go():
        b = Batcher(run, max_batch=64, max_delay_s=0.05)
        reqs = [["good"] * (1 + i % 3) for i in range(8)]
        reqs.insert(3, ["x", "boom"])
        return reqs, await asyncio.gather(*(b.submit(r, None) for r in reqs), return_exceptions=True)

    reqs, outs = asyncio.run(go())
    assert isinstance(outs[3], RuntimeError) and "boom" in str(outs[3])
    for r, o in zip(reqs[:3] + reqs[4:], outs[:3] + outs[4:]):
        assert not isinstance(o, Exception), o
        assert o[0][:, 0].tolist() == [4.0] * len(r)
    assert len(calls[0]) == sum(map(len, reqs))  # one batch first, then each request alone
    assert sorted(map(len, calls[1:])) == sorted(map(len, reqs))


def test_batcher_joins_concurrent_requests_and_splits_the_answers():
    seen = []

    def run(batch_texts, pairs):
        seen.append(len(batch_texts))
        return np.array([[len(t)] for t in batch_texts], np.float32), np.arange(len(batch_texts))

    async def go():
        b = Batcher(run, max_batch=8, max_delay_s=0.05)
        outs = await asyncio.gather(*(b.submit(["x" * i] * (1 + i % 2), None) for i in range(20)))
        return b, outs

    b, outs = asyncio.run(go())
    assert all(
        o[0][:, 0].tolist() == [i] * (1 + i % 2) for i, o in enumerate(outs)
    )  # each gets its own rows back
    assert all(len(o[1]) == 1 + i % 2 for i, o in enumerate(outs))  # every array of the tuple is split alike
    assert b.calls == len(seen) < 20 and sum(seen) == sum(1 + i % 2 for i in range(20))
    assert max(seen) <= 8 + 1  # a batch stops growing at max_batch (the last request may carry it one over)


READINESS = """
import asyncio
from pathlib import Path
from kserve.model_repository import ModelRepository
from pipeline.serving.server import LIMITS, Batcher, make_model
from pipeline.serving.v2app import BundleDataPlane

model = make_model(Path("unused"), "student", LIMITS, 1)  # not loaded: not ready
model.batcher = Batcher(None, 1, 0.0)
registry = ModelRepository()
plane = BundleDataPlane(registry)
seen = [asyncio.run(plane.ready())]  # no model at all
registry.update(model)
seen.append(asyncio.run(plane.ready()))
model.ready = True
seen.append(asyncio.run(plane.ready()))

async def dead_loop():
    model.batcher.task = asyncio.get_running_loop().create_task(asyncio.sleep(0))
    await model.batcher.task
    return await plane.ready()

seen.append(asyncio.run(dead_loop()))  # the batching loop ended: nothing would answer
print(seen)
"""


def test_readiness_follows_the_model_and_the_batching_loop():
    """Before issue 27 /v2/health/ready said true after the model was unloaded (kserve's DataPlane.ready is
    always True without a predictor host). In its own process: kserve's protobuf module and
    tritonclient.grpc's (pipeline.serving.repository) register the same names and cannot share one."""
    res = subprocess.run(
        [sys.executable, "-c", READINESS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split("\n")[-2] == "[False, False, True, False]"


@pytest.fixture(scope="module")
def server(served):  # noqa: F811
    return served.url, served.bundle


def infer(url, body, **kw):
    return httpx.post(
        f"{url}/v2/models/student/infer", timeout=30, **kw, **({"json": body} if body is not None else {})
    )


def test_health_metadata_and_an_answer_equal_to_the_runner(server):
    from pipeline.serving.runner import Bundle

    url, bundle = server
    assert httpx.get(f"{url}/v2/health/live").status_code == 200
    meta = httpx.get(f"{url}/v2/models/student").json()
    assert [i["name"] for i in meta["inputs"]] == ["text"] and meta["outputs"][0]["name"] == "logits"
    r = infer(url, loadtest.request_body("a fine day", None))
    assert r.status_code == 200, r.text
    label = next(o for o in r.json()["outputs"] if o["name"] == "label")["data"][0]
    assert label == Bundle(bundle).predict(["a fine day"])[0]["label"]


@pytest.mark.parametrize(
    "kind",
    ["malformed", "name", "datatype", "empty", "too_many", "too_long", "body", "chunked", "model", "v1"],
)
def test_bad_requests_get_a_4xx_with_a_message_and_the_server_lives(server, kind):
    url, _ = server
    text = {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["ok"]}
    n = LIMITS["max_texts"] + 1
    cases = {
        "malformed": dict(content=b'{"inputs": [', headers={"content-type": "application/json"}),
        "name": dict(json={"inputs": [{**text, "name": "sentence"}]}),
        "datatype": dict(json={"inputs": [{**text, "datatype": "INT64", "data": [1]}]}),
        "empty": dict(json={"inputs": [{**text, "shape": [0], "data": []}]}),
        "too_many": dict(json={"inputs": [{**text, "shape": [n], "data": ["a"] * n}]}),
        "too_long": dict(json={"inputs": [{**text, "data": ["x" * (LIMITS["max_chars"] + 1)]}]}),
        "body": dict(
            content=b"x" * (LIMITS["max_body_bytes"] + 1), headers={"content-type": "application/json"}
        ),
        "chunked": dict(
            content=iter([b"x" * (1 << 16)] * (LIMITS["max_body_bytes"] // (1 << 16) + 2)),
            headers={"content-type": "application/json"},
        ),
    }  # no content-length: counted as read
    if kind == "model":
        r = httpx.post(f"{url}/v2/models/nope/infer", json={"inputs": [text]}, timeout=30)
    elif kind == "v1":
        r = httpx.post(f"{url}/v1/models/student:predict", json={"instances": ["ok"]}, timeout=30)
    else:
        r = httpx.post(f"{url}/v2/models/student/infer", timeout=30, **cases[kind])
    assert 400 <= r.status_code < 500, (kind, r.status_code, r.text)
    assert r.json()["error"].strip()  # {"error": ...}: the shape tritonclient decodes
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200


def test_load_test_200_concurrent_requests(built):
    params, _, _ = built
    rows = [
        (json.loads(line)["text"], None)
        for line in (Path(params["data"]["out_dir"]) / "eval.jsonl").read_text().splitlines()
    ]
    got = loadtest.run(
        Path(params["deploy"]["bundle_dir"]) / "student", rows, 200, 200, threads=1, timeout_s=120
    )
    assert got["errors"] == 0, got["error_examples"]
    assert got["mismatches_vs_runner"] == 0 and got["label_mismatches"] == 0
    assert got["throughput_req_per_s"] > 0 and got["latency_ms_p99"] >= got["latency_ms_p50"]
