"""The HTTP face of pipeline.serving.server: a FastAPI app over kserve's DataPlane and V2Endpoints, with only the
routes one fixed bundle needs.

Why not kserve's RESTServer: in kserve 0.21 it binds 0.0.0.0 with no option and registers, besides the
v2 inference routes, v1, OpenAI and time-series routes and the model repository's load/unload, which
let anyone who can reach the port unload the model for good (infer 404, load 503, readiness still
true). Its error handlers log every rejected request at ERROR with a traceback, and FastAPI's body
parsing refused tritonclient's JSON mode (no Content-Type). So the app is assembled here from kserve's
own pieces (DataPlane for model lookup, readiness, infer and response encoding; V2Endpoints for
health, metadata and infer) and these routes, all under /v2:

    GET  /health/live, /health/ready                  ready only while the model is servable
    GET  ""                                           server metadata
    GET  /models/<m>[/versions/1][/ready|/config]     metadata (versions ["1"]), readiness, config
    POST /models/<m>[/versions/1]/infer               JSON or binary-data, with or without Content-Type
    GET  /models/stats, /models/<m>[/versions/1]/stats   inference statistics (Triton's shape)
    POST /repository/index                            the one model and its state
    POST /repository/models/<m>/load|unload           403: model control is off

Anything else, and every error, is a JSON {"error": "..."} that tritonclient decodes into an
InferenceServerException. A rejected request (4xx) logs one WARNING line, no traceback.
"""

from __future__ import annotations

import time

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady, ServerNotReady
from kserve.logging import logger
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput
from kserve.protocol.rest.v2_endpoints import V2Endpoints
from starlette.exceptions import HTTPException

from pipeline.serving.v2request import HEADER_LENGTH, BadRequest, Request as WireRequest, decode

VERSION = "1"  # a server holds one bundle: one version
MAX_LOGGED = 300  # characters of an error message in the log


class BundleDataPlane(DataPlane):
    """kserve's data plane, with readiness that asks the models and metadata that lists what is served."""

    async def ready(self) -> bool:
        models = self.model_registry.get_models()
        return bool(models) and all([await m.healthy() for m in models.values()])

    def metadata(self) -> dict:
        return {**super().metadata(), "extensions": ["binary_tensor_data", "statistics"]}


class Refused(Exception):
    """An HTTP error with a status and message for a route that exists on purpose to say no."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _reply(request: Request, status: int, message: str) -> JSONResponse:
    if status < 500:
        client = f"{request.client.host}:{request.client.port}" if request.client else "?"
        logger.warning(
            "rejected %s %s from %s: %d %r",
            request.method,
            request.url.path,
            client,
            status,
            message[:MAX_LOGGED],
        )
    else:
        logger.error("failed %s %s: %d %s", request.method, request.url.path, status, message[:MAX_LOGGED])
    return JSONResponse({"error": message}, status_code=status)


def _handler(status: int | None = None):
    """An exception handler answering `status` (None: the exception's own) with the exception's message."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return _reply(request, status or exc.status, str(exc))

    return handle


def _add_handlers(app: FastAPI) -> None:
    statuses = {
        InvalidInput: 400,
        BadRequest: 400,
        ModelNotFound: 404,
        ModelNotReady: 503,
        ServerNotReady: 503,
    }
    for exc, status in statuses.items():
        app.add_exception_handler(exc, _handler(status))
    app.add_exception_handler(Refused, _handler())

    async def http_error(
        request: Request, exc: HTTPException
    ):  # FastAPI's own 404/405: as JSON the client reads
        message = (
            f"no route {request.method} {request.url.path}"
            if exc.status_code in (404, 405)
            else str(exc.detail)
        )
        return _reply(request, exc.status_code, message)

    async def internal(request: Request, exc: Exception):  # a fault of the server: uvicorn logs the traceback
        return _reply(request, 500, f"internal error: {type(exc).__name__}: {exc}")

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, internal)


def to_kserve(request: WireRequest, model_name: str) -> InferRequest:
    """The checked request as kserve's InferRequest, the form its data plane and model take."""
    inputs = [
        InferInput(i["name"], i["shape"], i["datatype"], i["data"], i["parameters"]) for i in request.inputs
    ]
    outputs = (
        [RequestedOutput(o["name"], o["parameters"]) for o in request.outputs] if request.outputs else None
    )
    return InferRequest(
        model_name, inputs, request_id=request.id, parameters=request.parameters, request_outputs=outputs
    )


def _version(model_name: str, version: str | None) -> None:
    if version is not None and version != VERSION:
        raise Refused(404, f"model {model_name!r} has only version {VERSION}, not {version[:40]!r}")


def make_app(dataplane: BundleDataPlane) -> FastAPI:
    """The v2 app for the models in `dataplane`'s registry (kasp registers one)."""
    app = FastAPI(
        title="kasp v2 server",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        default_response_class=JSONResponse,
    )
    v2 = V2Endpoints(dataplane)

    def model_of(name: str, version: str | None = None):
        _version(name, version)
        return dataplane.get_model_from_registry(name)  # ModelNotFound: 404

    async def metadata(model_name: str, model_version: str | None = None):
        model_of(model_name, model_version)
        return {**(await dataplane.model_metadata(model_name)), "versions": [VERSION]}

    async def model_ready(model_name: str, model_version: str | None = None):
        model_of(model_name, model_version)
        return await v2.model_ready(model_name)

    async def config(model_name: str, model_version: str | None = None):
        return model_of(model_name, model_version).config()

    async def infer(request: Request, response: Response, model_name: str, model_version: str | None = None):
        model_of(model_name, model_version)
        body = decode(await request.body(), request.headers.get(HEADER_LENGTH))
        return await v2.infer(request, response, model_name, to_kserve(body, model_name))

    async def stats(model_name: str | None = None, model_version: str | None = None):
        names = [model_name] if model_name else list(dataplane.model_registry.get_models())
        return {"model_stats": [model_of(n, model_version).statistics() for n in names]}

    async def index():
        registry = dataplane.model_registry
        return [
            {
                "name": n,
                "version": VERSION,
                "state": "READY" if await registry.is_model_ready(n) else "UNAVAILABLE",
            }
            for n in registry.get_models()
        ]

    async def model_control(model_name: str):
        raise Refused(
            403, "model control is off: this server serves one fixed bundle; restart it to change models"
        )

    routes = [
        ("/health/live", v2.live, "GET"),
        ("/health/ready", v2.ready, "GET"),
        ("", v2.metadata, "GET"),
        ("/models/stats", stats, "GET"),
        ("/repository/index", index, "POST"),
        ("/repository/models/{model_name}/load", model_control, "POST"),
        ("/repository/models/{model_name}/unload", model_control, "POST"),
    ]
    for prefix in ("/models/{model_name}", "/models/{model_name}/versions/{model_version}"):
        routes += [
            (prefix, metadata, "GET"),
            (f"{prefix}/ready", model_ready, "GET"),
            (f"{prefix}/config", config, "GET"),
            (f"{prefix}/stats", stats, "GET"),
            (f"{prefix}/infer", infer, "POST"),
        ]
    for path, handler, method in routes:
        app.add_api_route(f"/v2{path}", handler, methods=[method], response_model=None)
    _add_handlers(app)
    return app


class Stats:
    """Triton-style inference statistics for one model: requests that succeeded or failed, and their time."""

    def __init__(self):
        self.success, self.fail, self.texts, self.last_ms = [0, 0], [0, 0], 0, 0

    def record(self, ok: bool, texts: int, start_ns: int) -> None:
        bucket = self.success if ok else self.fail
        bucket[0] += 1
        bucket[1] += time.perf_counter_ns() - start_ns
        self.texts += texts if ok else 0
        self.last_ms = int(time.time() * 1000)

    def as_triton(self, name: str, executions: int) -> dict:
        return {
            "name": name,
            "version": VERSION,
            "last_inference": self.last_ms,
            "inference_count": self.texts,
            "execution_count": executions,
            "inference_stats": {
                "success": {"count": self.success[0], "ns": self.success[1]},
                "fail": {"count": self.fail[0], "ns": self.fail[1]},
            },
        }
