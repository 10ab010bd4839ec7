"""pipeline.serving.server as real clients see it (issue 27): tritonclient.http in binary-data and JSON modes, async
infer, errors as InferenceServerException with the server's message; raw HTTP for each malformed request
the issue lists; a property test of random good and bad requests sent together; a 1,000-request load test
with bad requests mixed in. One server process (tests/serving.py) on 127.0.0.1 serves them all."""

import asyncio
import json
import random
import struct
import time
import uuid

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pipeline.serving.runner import Bundle
from tests.conftest import demo_rows
from tests.serving import LABELS, MAX_LENGTH, served, text_bundle  # noqa: F401  (fixtures)

JSON = {"content-type": "application/json"}
ATOL = 1e-3  # a request's logits move by float noise with the padded width of the batch it joined
LONG = " ".join(["a fine and long day"] * 20)  # over MAX_LENGTH tokens: truncated
SENTENCES = [row.split("\t")[0] for row in demo_rows("dev", 40)]


@pytest.fixture(scope="module")
def runner(text_bundle):  # noqa: F811
    return Bundle(text_bundle, threads=1)


@pytest.fixture(scope="module")
def client(served):  # noqa: F811
    import tritonclient.http as http

    c = http.InferenceServerClient(served.host, connection_timeout=30, network_timeout=60, concurrency=4)
    yield c
    c.close()


def triton_input(texts: list, binary: bool, name: str = "text"):
    import tritonclient.http as http

    tensor = http.InferInput(name, [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=object), binary_data=binary)
    return tensor


def json_body(values: list, name: str = "text") -> bytes:
    return json.dumps(
        {"inputs": [{"name": name, "shape": [len(values)], "datatype": "BYTES", "data": values}]},
        ensure_ascii=True,
    ).encode()


def binary_request(values: list[bytes], declared: int | None = None) -> tuple[bytes, dict]:
    """(body, headers) of a binary-data request with these BYTES elements; `declared` overrides the size."""
    data = b"".join(struct.pack("<I", len(v)) + v for v in values)
    size = len(data) if declared is None else declared
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "shape": [len(values)],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    ).encode()
    return header + data, {"Inference-Header-Content-Length": str(len(header))}


# --- tritonclient ---------------------------------------------------------------------------------------------


def test_tritonclient_health_metadata_versions_config_stats_and_index(client):
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("student")
    assert client.is_model_ready("student", "1")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    for version in ("", "1"):  # GET /v2/models/student/versions/1 was a 501
        meta = client.get_model_metadata("student", version)
        assert meta["versions"] == ["1"] and [i["name"] for i in meta["inputs"]] == ["text"]
        assert [o["name"] for o in meta["outputs"]] == ["logits", "label"]
    config = client.get_model_config("student")  # was a 404 the client could not decode
    assert config["name"] == "student" and config["input"] == [
        {"name": "text", "data_type": "TYPE_STRING", "dims": [-1]}
    ]
    stats = client.get_inference_statistics("student")["model_stats"]
    assert stats[0]["name"] == "student" and stats[0]["version"] == "1"
    assert {"success", "fail"} <= set(stats[0]["inference_stats"])
    assert client.get_model_repository_index() == [{"name": "student", "version": "1", "state": "READY"}]


@pytest.mark.parametrize("binary", [True, False], ids=["binary-data", "json"])
def test_tritonclient_infer_equals_the_runner_and_reports_empty_and_truncated(client, runner, binary):
    """JSON mode sends no Content-Type: it was refused with a 400 before issue 27."""
    import tritonclient.http as http

    texts = ["a fine day", "", "élan 😀 naïve", LONG]
    outputs = [http.InferRequestedOutput(n, binary_data=binary) for n in ("logits", "label")]
    result = client.infer("student", [triton_input(texts, binary)], outputs=outputs)
    np.testing.assert_allclose(result.as_numpy("logits"), runner.logits(texts), atol=1e-4)
    labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label")]
    assert labels == [a["label"] for a in runner.predict(texts)]
    params = result.get_response()["parameters"]
    notes = runner.notes(texts, None, runner.token_counts(texts))
    assert params["tokens"] == ",".join(str(n["tokens"]) for n in notes)
    assert params["empty"] == "1" and params["truncated"] == "3" and notes[3]["tokens"] == MAX_LENGTH
    assert notes[3]["tokens_in"] > MAX_LENGTH


def test_tritonclient_async_infer(client, runner):
    pending = [(t, client.async_infer("student", [triton_input([t], binary=True)])) for t in SENTENCES[:8]]
    for text, request in pending:
        np.testing.assert_allclose(request.get_result().as_numpy("logits"), runner.logits([text]), atol=ATOL)


@pytest.mark.parametrize(
    "call,status,message",
    [
        (
            lambda c: c.infer("student", [triton_input([b"ok", b"\xff"], True)]),
            "400",
            "'text' element 1: not UTF-8",
        ),
        (
            lambda c: c.infer("student", [triton_input(["ok"], False, name="sentence")]),
            "400",
            "inputs must be named",
        ),
        (lambda c: c.get_model_metadata("nope"), "404", "nope"),
        (lambda c: c.get_model_metadata("student", "2"), "404", "only version 1"),
        (lambda c: c.unload_model("student"), "403", "model control is off"),
        (lambda c: c.load_model("student"), "403", "model control is off"),
    ],
)
def test_tritonclient_errors_carry_the_servers_message(client, call, status, message):
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as err:
        call(client)
    assert err.value.status() == status and message in err.value.message(), err.value
    assert client.is_model_ready("student")


# --- raw HTTP: each malformed request of the issue ------------------------------------------------------------

MALFORMED = {  # name: (body, headers, what the error must say); each was a 500 or was scored before issue 27
    "lone_surrogate": (
        b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["\\ud800"]}]}',
        JSON,
        "'text' element 0: not valid UTF-8",
    ),
    "non_string": (json_body(["good", 5]), JSON, "'text' element 1: expected a string, got int"),
    "nul": (json_body(["\u0000"]), JSON, "'text' element 0: a NUL character"),
    "header_not_a_number": (
        binary_request([b"ok"])[0],
        {"Inference-Header-Content-Length": "abc"},
        "Inference-Header-Content-Length must be a byte count",
    ),
    "non_utf8_bytes": (*binary_request([b"good", b"caf\xe9"]), "'text' element 1: not UTF-8"),
    "short_body": (
        binary_request([b"a fine day"])[0][:-3],
        binary_request([b"a fine day"])[1],
        "binary_data_size 14 but only 11 bytes",
    ),
}


def _prefix_over_body():
    """An element whose length prefix says 1000 while 2 bytes follow."""
    header = json.dumps(
        {
            "inputs": [
                {"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}
            ]
        }
    ).encode()
    return header + struct.pack("<I", 1000) + b"ok", {"Inference-Header-Content-Length": str(len(header))}


MALFORMED["prefix_over_body"] = (*_prefix_over_body(), "length prefix 1000 is larger than the 2 bytes left")


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_request_is_a_400_naming_the_input_and_element(served, kind):  # noqa: F811
    body, headers, message = MALFORMED[kind]
    r = httpx.post(f"{served.url}/v2/models/student/infer", content=body, headers=headers, timeout=30)
    assert r.status_code == 400 and message in r.json()["error"], (r.status_code, r.text)


def test_a_bad_request_does_not_fail_its_batch_neighbours(served, runner):  # noqa: F811
    """The issue's case: 8 good requests beside one lone surrogate all failed with it (500)."""
    bad = MALFORMED["lone_surrogate"][0]

    async def fire():
        async with httpx.AsyncClient(timeout=60) as http:
            url = f"{served.url}/v2/models/student/infer"
            return await asyncio.gather(
                *(
                    http.post(url, content=json_body([t]) if t else bad, headers=JSON)
                    for t in SENTENCES[:4] + [None] + SENTENCES[4:8]
                )
            )

    answers = asyncio.run(fire())
    for text, r in zip(SENTENCES[:8], answers[:4] + answers[5:]):
        assert r.status_code == 200, r.text
        logits = np.array(r.json()["outputs"][0]["data"], np.float32).reshape(1, -1)
        np.testing.assert_allclose(logits, runner.logits([text]), atol=ATOL)
    assert answers[4].status_code == 400


def test_json_without_content_type_is_read_as_json(served):  # noqa: F811
    request = httpx.Request(
        "POST", f"{served.url}/v2/models/student/infer", content=json_body(["a fine day"])
    )
    assert "content-type" not in request.headers
    with httpx.Client(timeout=30) as http:
        r = http.send(request)
    assert r.status_code == 200 and r.json()["outputs"][0]["shape"] == [1, len(LABELS)]


def test_model_control_is_off_and_the_model_stays_servable(served):  # noqa: F811
    """Before issue 27 unload returned 200, then infer 404, ready still true and load 503."""
    for verb in ("unload", "load"):
        r = httpx.post(f"{served.url}/v2/repository/models/student/{verb}", timeout=30)
        assert r.status_code == 403 and "model control is off" in r.json()["error"]
    assert httpx.get(f"{served.url}/v2/health/ready", timeout=30).json() == {"ready": True}
    assert (
        httpx.post(f"{served.url}/v2/models/student/infer", content=json_body(["ok"]), timeout=30).status_code
        == 200
    )


@pytest.mark.parametrize(
    "method,path,status",
    [
        ("GET", "/v2/models/student/versions/1", 200),
        ("GET", "/v2/models/student/versions/7", 404),
        ("GET", "/v2/models/student/config", 200),
        ("GET", "/v2/models/stats", 200),
        ("POST", "/v2/repository/index", 200),
        ("GET", "/v2/no/such/route", 404),
        ("DELETE", "/v2/models/student", 405),
        ("POST", "/v1/models/student:predict", 404),
    ],
)
def test_every_route_answers_json_a_client_decodes(served, method, path, status):  # noqa: F811
    r = httpx.request(method, f"{served.url}{path}", timeout=30)
    assert r.status_code == status and isinstance(r.json(), (dict, list)), r.text
    if status >= 400:
        assert r.json()["error"]


def test_a_rejected_request_logs_one_warning_line_and_no_traceback(served):  # noqa: F811
    """Each rejection wrote ~28 traceback lines at ERROR before issue 27."""
    marker = f"sentence-{uuid.uuid4().hex}"
    r = httpx.post(
        f"{served.url}/v2/models/student/infer", content=json_body(["ok"], name=marker), timeout=30
    )
    assert r.status_code == 400
    time.sleep(0.2)  # the server writes its log line after the answer
    log = served.log_text()
    lines = [line for line in log.splitlines() if marker in line]
    assert len(lines) == 1 and "WARNING" in lines[0] and "400" in lines[0], lines
    assert "Traceback" not in log and " ERROR " not in log


# --- random good and bad requests, together -------------------------------------------------------------------

GOOD_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=60)
BAD = st.one_of(
    st.tuples(
        st.just("non_string"),
        st.one_of(st.integers(), st.none(), st.booleans(), st.floats(allow_nan=False)),
        st.just("expected a string"),
    ),
    st.tuples(st.just("surrogate"), st.integers(0xD800, 0xDFFF).map(chr), st.just("not valid UTF-8")),
    st.tuples(st.just("nul"), GOOD_TEXT.map(lambda t: t + "\x00"), st.just("a NUL character")),
    st.tuples(
        st.just("bad_utf8"),
        st.sampled_from([b"\xff", b"\xc3", b"ab\xed\xa0\x80", b"\xe9t\xe9"]),
        st.just("not UTF-8"),
    ),
    st.tuples(
        st.just("short"),
        st.integers(1, 4),  # every element has a 4-byte prefix
        st.just("bytes of binary data are left"),
    ),
    st.tuples(
        st.just("header"),
        st.sampled_from(["abc", "-3", "1e3", "99999999"]),
        st.just("Inference-Header-Content-Length"),
    ),
)


def bad_request(kind: str, value, position: int, good: list[str]) -> tuple[bytes, dict]:
    """A request with `good` texts and one bad element (or a bad frame) at `position`."""
    if kind in ("non_string", "surrogate", "nul"):
        return json_body(good[:position] + [value] + good[position:]), JSON
    encoded = [t.encode() for t in good]
    if kind == "bad_utf8":
        return binary_request(encoded[:position] + [value] + encoded[position:])
    body, headers = binary_request(encoded or [b"x"])
    if kind == "short":
        return body[:-value], headers
    return body, {"Inference-Header-Content-Length": value}


REQUEST = st.one_of(
    st.tuples(st.just("good"), st.lists(GOOD_TEXT, min_size=1, max_size=4), st.booleans()),
    st.tuples(st.just("bad"), BAD, st.lists(GOOD_TEXT, max_size=3), st.integers(0, 3)),
)


async def _send_all(url: str, requests: list[tuple[bytes, dict]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60) as http:
        return await asyncio.gather(
            *(http.post(url, content=body, headers=headers) for body, headers in requests)
        )


@settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(st.lists(REQUEST, min_size=2, max_size=24))
def test_random_good_and_bad_requests_sent_together(served, runner, requests):  # noqa: F811
    """Every good request is answered as the runner answers it, every bad one is a 400 naming its fault,
    whatever else shares its batch."""
    wire = []
    for request in requests:
        if request[0] == "good":
            texts, binary = request[1], request[2]
            wire.append(binary_request([t.encode() for t in texts]) if binary else (json_body(texts), JSON))
        else:
            (kind, value, _), good, position = request[1], request[2], request[3]
            wire.append(bad_request(kind, value, min(position, len(good)), good))
    answers = asyncio.run(_send_all(f"{served.url}/v2/models/student/infer", wire))
    for request, r in zip(requests, answers):
        if request[0] == "good":
            assert r.status_code == 200, (request, r.text)
            out = r.json()["outputs"][0]
            got = np.array(out["data"], np.float32).reshape(out["shape"])
            np.testing.assert_allclose(got, runner.logits(request[1]), atol=ATOL)
        else:
            assert r.status_code == 400 and request[1][2] in r.json()["error"], (
                request,
                r.status_code,
                r.text,
            )


# --- 1,000 requests with bad ones mixed in --------------------------------------------------------------------

LOAD_REQUESTS, LOAD_BAD_SHARE, LOAD_CONCURRENCY, LOAD_TIMEOUT_S = 1000, 0.15, 64, 180


async def _load(served, plan: list, good_texts: dict) -> list[dict]:  # noqa: F811
    """Good requests through tritonclient's asyncio client (binary-data), bad ones as raw HTTP; at most
    LOAD_CONCURRENCY in flight; each record: kind, ok, seconds, logits or error."""
    import tritonclient.http.aio as aio

    client = aio.InferenceServerClient(served.host, conn_limit=LOAD_CONCURRENCY, conn_timeout=60)
    gate = asyncio.Semaphore(LOAD_CONCURRENCY)
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=LOAD_CONCURRENCY)) as raw:

        async def one(i: int, kind: str):
            async with gate:
                t0 = time.perf_counter()
                try:
                    if kind == "good":
                        result = await client.infer("student", [triton_input([good_texts[i]], binary=True)])
                        return {
                            "kind": kind,
                            "ok": True,
                            "logits": result.as_numpy("logits")[0],
                            "seconds": time.perf_counter() - t0,
                        }
                    body, headers = MALFORMED[kind][:2]
                    r = await raw.post(f"{served.url}/v2/models/student/infer", content=body, headers=headers)
                    return {
                        "kind": kind,
                        "ok": r.status_code == 400,
                        "error": r.text[:200],
                        "seconds": time.perf_counter() - t0,
                    }
                except (
                    Exception
                ) as e:  # a good request that fails is counted, not raised: the figures say how many
                    return {
                        "kind": kind,
                        "ok": False,
                        "error": f"{type(e).__name__}: {e}"[:200],
                        "seconds": time.perf_counter() - t0,
                    }

        try:
            return await asyncio.wait_for(
                asyncio.gather(*(one(i, k) for i, k in enumerate(plan))), LOAD_TIMEOUT_S
            )
        finally:
            await client.close()


def test_1000_requests_with_bad_ones_mixed_in(served, runner):  # noqa: F811
    rng = random.Random(27)
    kinds = sorted(MALFORMED)
    plan = ["good" if rng.random() >= LOAD_BAD_SHARE else rng.choice(kinds) for _ in range(LOAD_REQUESTS)]
    good_texts = {i: SENTENCES[i % len(SENTENCES)] for i, k in enumerate(plan) if k == "good"}
    want = dict(zip(good_texts, runner.logits(list(good_texts.values()))))
    t0 = time.perf_counter()
    records = asyncio.run(_load(served, plan, good_texts))
    wall = time.perf_counter() - t0
    good = [(i, r) for i, r in enumerate(records) if r["kind"] == "good"]
    bad = [r for r in records if r["kind"] != "good"]
    errors = [r["error"] for _, r in good if not r["ok"]]
    mismatches = [i for i, r in good if r["ok"] and not np.allclose(r["logits"], want[i], atol=ATOL)]
    ms = np.array([r["seconds"] for r in records]) * 1000
    figures = {
        "requests": len(records),
        "good": len(good),
        "bad": len(bad),
        "good_errors": len(errors),
        "good_mismatches_vs_runner": len(mismatches),
        "bad_answered_400": sum(r["ok"] for r in bad),
        "concurrency": LOAD_CONCURRENCY,
        "wall_s": round(wall, 2),
        "throughput_req_per_s": round(len(records) / wall, 1),
        "latency_ms_p50": round(float(np.percentile(ms, 50)), 1),
        "latency_ms_p99": round(float(np.percentile(ms, 99)), 1),
    }
    print("\nload test:", json.dumps(figures))
    assert len(bad) >= 100 and len(good) >= 800
    assert not errors, errors[:3]
    assert not mismatches, mismatches[:5]
    assert figures["bad_answered_400"] == len(bad), [r["error"] for r in bad if not r["ok"]][:3]
    assert httpx.get(f"{served.url}/v2/health/ready", timeout=30).status_code == 200
