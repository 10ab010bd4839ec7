"""deploy.server: KServe v2 endpoints on loopback, 4xx (never 5xx) for bad requests, batching, and a
bounded 200-request concurrent load test whose answers equal the bundle runner's."""
import json
import tempfile
from pathlib import Path

import httpx
import pytest

from deploy.server import LIMITS, check_inputs
from eval import loadtest


def test_check_inputs_accepts_texts_and_pairs():
    assert check_inputs([("text", "BYTES", [2], ["a", b"b"])], False, LIMITS) == (["a", "b"], None)
    assert check_inputs([("text", "BYTES", [1], ["a"]), ("text_pair", "BYTES", [1], ["b"])], True, LIMITS) == (
        ["a"], ["b"])


@pytest.mark.parametrize("inputs,pairs,match", [
    ([("sentence", "BYTES", [1], ["a"])], False, "named"),
    ([("text", "INT64", [1], [1])], False, "datatype"),
    ([("text", "BYTES", [0], [])], False, "empty"),
    ([("text", "BYTES", [2], ["a"])], False, "shape"),
    ([("text", "BYTES", [1], ["x" * (LIMITS["max_chars"] + 1)])], False, "characters"),
    ([("text", "BYTES", [LIMITS["max_texts"] + 1], ["a"] * (LIMITS["max_texts"] + 1))], False, "over the limit"),
    ([("text", "BYTES", [1], ["a"])], True, "named"),
    ([("text", "BYTES", [2], ["a", "b"]), ("text_pair", "BYTES", [1], ["c"])], True, "text_pairs"),
])
def test_check_inputs_names_the_fault(inputs, pairs, match):
    with pytest.raises(ValueError, match=match):
        check_inputs(inputs, pairs, LIMITS)


def test_batcher_joins_concurrent_requests_and_splits_the_answers():
    import asyncio

    import numpy as np

    from deploy.server import Batcher

    seen = []

    def run(texts, pairs):
        seen.append(len(texts))
        return np.array([[len(t)] for t in texts], np.float32)

    async def go():
        b = Batcher(run, max_batch=8, max_delay_s=0.05)
        outs = await asyncio.gather(*(b.submit(["x" * i] * (1 + i % 2), None) for i in range(20)))
        return b, outs

    b, outs = asyncio.run(go())
    assert all(o[:, 0].tolist() == [i] * (1 + i % 2) for i, o in enumerate(outs))  # each gets its own rows back
    assert b.calls == len(seen) < 20 and sum(seen) == sum(1 + i % 2 for i in range(20))
    assert max(seen) <= 8 + 1  # a batch stops growing at max_batch (the last request may carry it one over)


@pytest.fixture(scope="module")
def server(built):
    params, _, _ = built
    bundle = Path(params["deploy"]["bundle_dir"]) / "student"
    port = loadtest.free_port()
    with tempfile.TemporaryFile("w+") as log:
        proc = loadtest.start_server(bundle, "student", port, 1, 60, log)
        try:
            yield f"http://127.0.0.1:{port}", bundle
        finally:
            proc.terminate()
            proc.wait(30)


def infer(url, body, **kw):
    return httpx.post(f"{url}/v2/models/student/infer", timeout=30, **kw, **({"json": body} if body is not None else {}))


def test_health_metadata_and_an_answer_equal_to_the_runner(server):
    from deploy.runner import Bundle

    url, bundle = server
    assert httpx.get(f"{url}/v2/health/live").status_code == 200
    meta = httpx.get(f"{url}/v2/models/student").json()
    assert [i["name"] for i in meta["inputs"]] == ["text"] and meta["outputs"][0]["name"] == "logits"
    r = infer(url, loadtest.request_body("a fine day", None))
    assert r.status_code == 200, r.text
    label = next(o for o in r.json()["outputs"] if o["name"] == "label")["data"][0]
    assert label == Bundle(bundle).predict(["a fine day"])[0]["label"]


@pytest.mark.parametrize("kind", ["malformed", "name", "datatype", "empty", "too_many", "too_long", "body", "chunked",
                                  "model", "v1"])
def test_bad_requests_get_a_4xx_with_a_message_and_the_server_lives(server, kind):
    url, _ = server
    text = {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["ok"]}
    n = LIMITS["max_texts"] + 1
    cases = {"malformed": dict(content=b'{"inputs": [', headers={"content-type": "application/json"}),
             "name": dict(json={"inputs": [{**text, "name": "sentence"}]}),
             "datatype": dict(json={"inputs": [{**text, "datatype": "INT64", "data": [1]}]}),
             "empty": dict(json={"inputs": [{**text, "shape": [0], "data": []}]}),
             "too_many": dict(json={"inputs": [{**text, "shape": [n], "data": ["a"] * n}]}),
             "too_long": dict(json={"inputs": [{**text, "data": ["x" * (LIMITS["max_chars"] + 1)]}]}),
             "body": dict(content=b"x" * (LIMITS["max_body_bytes"] + 1), headers={"content-type": "application/json"}),
             "chunked": dict(content=iter([b"x" * (1 << 16)] * (LIMITS["max_body_bytes"] // (1 << 16) + 2)),
                             headers={"content-type": "application/json"})}  # no content-length: counted as read
    if kind == "model":
        r = httpx.post(f"{url}/v2/models/nope/infer", json={"inputs": [text]}, timeout=30)
    elif kind == "v1":
        r = httpx.post(f"{url}/v1/models/student:predict", json={"instances": ["ok"]}, timeout=30)
    else:
        r = httpx.post(f"{url}/v2/models/student/infer", timeout=30, **cases[kind])
    assert 400 <= r.status_code < 500, (kind, r.status_code, r.text)
    assert r.text.strip()
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200


def test_load_test_200_concurrent_requests(built):
    params, _, _ = built
    rows = [(json.loads(line)["text"], None)
            for line in (Path(params["data"]["out_dir"]) / "eval.jsonl").read_text().splitlines()]
    got = loadtest.run(Path(params["deploy"]["bundle_dir"]) / "student", rows, 200, 200, threads=1, timeout_s=120)
    assert got["errors"] == 0, got["error_examples"]
    assert got["mismatches_vs_runner"] == 0 and got["label_mismatches"] == 0
    assert got["throughput_req_per_s"] > 0 and got["latency_ms_p99"] >= got["latency_ms_p50"]
