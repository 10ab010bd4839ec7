"""Read and check one KServe v2 infer request body before it reaches the batcher.

Two wire forms, told apart the way tritonclient sends them (with or without a Content-Type):
- JSON: the whole body is the request object;
- the binary-data extension: the `Inference-Header-Content-Length` header gives the size of a JSON header,
  and the inputs whose parameters carry `binary_data_size` follow it back to back; a BYTES element is a
  4-byte little-endian length and that many UTF-8 bytes.

`decode` turns either into a Request, every BYTES element a str, or raises BadRequest naming the fault
(the header, the input, the element index); pipeline/serving/v2app.py hands it to kserve as an InferRequest.
`texts` then checks what the model needs: the input names, datatype, shape, count and each text (a
string, UTF-8, no NUL, not too long).
kserve's own decoder is not used for bodies: it answers a bad length prefix or non-UTF-8 bytes with a
500 and scores a body shorter than it declares. Nothing here imports kserve: its protobuf module and
tritonclient.grpc's register the same `inference.*` names and cannot share a process (the tests).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from pipeline.serving.runner import text_problem

HEADER_LENGTH = "inference-header-content-length"
PREFIX = struct.Struct("<I")


class BadRequest(ValueError):
    """The client sent something this server cannot score; the message says what and where."""


@dataclass
class Request:
    """A v2 infer request, read and checked: inputs as {name, shape, datatype, parameters, data},
    requested outputs as {name, parameters} (None: all)."""

    id: str | None
    parameters: dict
    inputs: list[dict]
    outputs: list[dict] | None


def _header_size(value: str, body_size: int) -> int:
    if not (value.isascii() and value.isdigit()):
        raise BadRequest(f"header Inference-Header-Content-Length must be a byte count, got {value[:40]!r}")
    size = int(value)
    if size > body_size:
        raise BadRequest(
            f"header Inference-Header-Content-Length is {size} but the body has only {body_size} bytes"
        )
    return size


def _json_object(raw: bytes, what: str) -> dict:
    try:
        obj = json.loads(raw)
    except ValueError as e:  # UnicodeDecodeError included
        raise BadRequest(f"{what} is not UTF-8 JSON: {e}") from None
    if not isinstance(obj, dict):
        raise BadRequest(f"{what} must be a JSON object, got {type(obj).__name__}")
    return obj


def _binary_size(spec: dict, name: str) -> int | None:
    size = (spec.get("parameters") or {}).get("binary_data_size")
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise BadRequest(f"input {name!r}: binary_data_size must be a byte count, got {size!r}")
    if "data" in spec:
        raise BadRequest(f"input {name!r}: has both data and binary_data_size")
    return size


def bytes_elements(chunk: bytes, name: str) -> list[str]:
    """The BYTES elements of one input's binary data, each checked: whole prefix, whole element, UTF-8."""
    out, pos = [], 0
    while pos < len(chunk):
        where = f"input {name!r} element {len(out)}"
        if pos + PREFIX.size > len(chunk):
            raise BadRequest(f"{where}: its 4-byte length prefix is cut off ({len(chunk) - pos} bytes left)")
        (size,), pos = PREFIX.unpack_from(chunk, pos), pos + PREFIX.size
        if pos + size > len(chunk):
            raise BadRequest(
                f"{where}: length prefix {size} is larger than the {len(chunk) - pos} bytes left"
            )
        try:
            out.append(chunk[pos : pos + size].decode("utf-8"))
        except UnicodeDecodeError as e:
            raise BadRequest(f"{where}: not UTF-8 ({e.reason} at byte {e.start})") from None
        pos += size
    return out


def _check_spec(spec, i: int) -> str:
    """The input's name, once its JSON has the v2 fields with the v2 types."""
    if not isinstance(spec, dict):
        raise BadRequest(f"inputs[{i}] must be an object, got {type(spec).__name__}")
    name = spec.get("name")
    if not isinstance(name, str):
        raise BadRequest(f"inputs[{i}]: name must be a string, got {name!r}"[:200])
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise BadRequest(f"input {name!r}: shape must be a list of integers, got {shape!r}"[:200])
    if not isinstance(spec.get("datatype"), str):
        raise BadRequest(f"input {name!r}: datatype must be a string, got {spec.get('datatype')!r}"[:200])
    if not isinstance(spec.get("parameters") or {}, dict):
        raise BadRequest(f"input {name!r}: parameters must be an object")
    return name


def _inputs(header: dict, binary: bytes | None) -> list[dict]:
    """The request's inputs as {name, shape, datatype, parameters, data}, binary data read and checked."""
    specs = header.get("inputs")
    if not isinstance(specs, list) or not specs:
        raise BadRequest("the request needs a non-empty 'inputs' list")
    out, pos = [], 0
    for i, spec in enumerate(specs):
        name = _check_spec(spec, i)
        size = _binary_size(spec, name) if binary is not None else None
        if size is None:
            if "data" not in spec:
                raise BadRequest(f"input {name!r}: no data (and no binary_data_size)")
            data = spec["data"]
        else:
            if pos + size > len(binary):
                raise BadRequest(
                    f"input {name!r}: binary_data_size {size} but only {len(binary) - pos} bytes "
                    f"of binary data are left in the body"
                )
            chunk, pos = binary[pos : pos + size], pos + size
            data = bytes_elements(chunk, name) if spec["datatype"] == "BYTES" else chunk
        out.append(
            {
                "name": name,
                "shape": spec["shape"],
                "datatype": spec["datatype"],
                "parameters": spec.get("parameters") or {},
                "data": data,
            }
        )
    if binary is not None and pos != len(binary):
        raise BadRequest(f"the inputs declare {pos} bytes of binary data but the body carries {len(binary)}")
    return out


def _outputs(header: dict) -> list[dict] | None:
    specs = header.get("outputs")
    if specs is None:
        return None
    if not isinstance(specs, list) or not all(
        isinstance(s, dict) and isinstance(s.get("name"), str) for s in specs
    ):
        raise BadRequest("'outputs' must be a list of objects with a string 'name'")
    if not all(isinstance(s.get("parameters") or {}, dict) for s in specs):
        raise BadRequest("an output's parameters must be an object")
    return [{"name": s["name"], "parameters": s.get("parameters") or {}} for s in specs] or None


def decode(body: bytes, header_length: str | None) -> Request:
    """A v2 body read and checked (JSON, or binary-data when header_length is given), or BadRequest."""
    if header_length is None:
        header, binary = _json_object(body, "the body"), None
    else:
        size = _header_size(header_length, len(body))
        header, binary = _json_object(body[:size], "the JSON header"), body[size:]
    if not isinstance(header.get("id", ""), str) or not isinstance(header.get("parameters") or {}, dict):
        raise BadRequest("'id' must be a string and 'parameters' an object")
    return Request(
        header.get("id"), header.get("parameters") or {}, _inputs(header, binary), _outputs(header)
    )


def _texts(name: str, dtype, shape, data, limits: dict) -> list[str]:
    if dtype != "BYTES":
        raise BadRequest(f"input {name!r}: datatype must be BYTES, got {dtype!r}")
    if not isinstance(data, list) or list(shape) != [len(data)]:
        size = len(data) if isinstance(data, list) else type(data).__name__
        raise BadRequest(
            f"input {name!r}: shape must be [n] for a flat list of n texts, got shape {list(shape)} "
            f"for data of {size}"
        )
    if not data:
        raise BadRequest(f"input {name!r}: empty batch")
    if len(data) > limits["max_texts"]:
        raise BadRequest(f"input {name!r}: {len(data)} texts, over the limit of {limits['max_texts']}")
    for i, value in enumerate(data):
        if problem := text_problem(value):
            raise BadRequest(f"input {name!r} element {i}: {problem}")
        if len(value) > limits["max_chars"]:
            raise BadRequest(
                f"input {name!r} element {i}: {len(value)} characters, over the limit of "
                f"{limits['max_chars']}"
            )
    return data


def texts(inputs: list, pairs: bool, limits: dict) -> tuple[list[str], list[str] | None]:
    """(texts, text_pairs) from inputs [(name, datatype, shape, data)], every element checked, or BadRequest."""
    want = ["text", "text_pair"] if pairs else ["text"]
    names = [i[0] for i in inputs]
    if sorted(names) != want:
        raise BadRequest(f"inputs must be named {want}, got {names}")
    out = {name: _texts(name, dtype, shape, data, limits) for name, dtype, shape, data in inputs}
    if pairs and len(out["text"]) != len(out["text_pair"]):
        raise BadRequest(f"{len(out['text'])} texts but {len(out['text_pair'])} text_pairs")
    return out["text"], out.get("text_pair")
