"""Build the FastAPI app: routers, request telemetry, the model loaded once at startup."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException

from ..config import ServeSettings
from .routers import health, metrics, predict
from .routers.predict import error_response
from .service import Service, watch_for_shutdown
from .telemetry import publish_until_cancelled, shared_dir

SWITCH_INTERVAL_SECONDS = 0.001


def create_app(settings: ServeSettings | None = None) -> FastAPI:
    """The prediction service; the model loads when the app starts."""
    service = Service(settings or ServeSettings.from_env())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        watch_for_shutdown()
        service.load()
        # The model and the libraries live as long as the process: freeze them out of the
        # garbage collector's full passes, each of which would otherwise walk ~200k objects
        # (0.1-0.2 s) while every request in flight waits.
        gc.collect()
        gc.freeze()
        # The prediction-log writer is a thread: hand the GIL back to the event loop within
        # 1 ms (default 5 ms) of it asking, so a batch insert never holds a request up longer.
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
        # Several workers: publish this one's counts for the others' /metrics.
        publishing = None
        if folder := shared_dir():
            publishing = asyncio.create_task(publish_until_cancelled(service.telemetry, folder))
        yield
        await service.close()
        if publishing:  # after close: its last counts hold the prediction log's final flush
            publishing.cancel()
            with suppress(asyncio.CancelledError):
                await publishing

    # FastAPI's own OpenTelemetry hooks cost ~10 % of a request; /metrics covers what we need.
    app = FastAPI(
        title="Prediction service",
        lifespan=lifespan,
        # No redirect of /predict/ to /predict: its Location would be built from the client's
        # Host header.
        redirect_slashes=False,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.service = service
    # Routes are tried in order: the hot one first.
    for router in (predict.router, health.router, metrics.router):
        app.include_router(router)
    app.add_middleware(RequestTelemetry, service=service)
    # Every error answers one shape (schema.ErrorResponse) with a request id, also a path or
    # method that does not exist and a failure no route caught (the traceback goes to the log).
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _server_error)
    app.openapi = lambda: _openapi(app, service)
    return app


async def _http_error(_request, exc: HTTPException):
    return error_response(exc.status_code, exc.detail, headers=exc.headers)


async def _server_error(_request, _exc: Exception):
    return error_response(500, "internal error; the traceback is in the service log")


class RequestTelemetry:
    """Count every response by path and status, and time /predict (plain ASGI: no overhead)."""

    def __init__(self, app, service: Service) -> None:
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
            self.service.telemetry.request(path, status[0], time.perf_counter() - started)


KNOWN_PATHS = {"/health", "/ready", "/version", "/predict", "/metrics", "/docs", "/openapi.json"}


def _openapi(app: FastAPI, service: Service) -> dict:
    """The OpenAPI document, with /predict's body schema derived from the loaded model."""
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(title=app.title, version="1", routes=app.routes)
    if service.request_type is None:
        return document  # not cached: the schema appears once the model is loaded
    schema = service.request_type.model_json_schema(ref_template="#/components/schemas/{model}")
    components = document.setdefault("components", {}).setdefault("schemas", {})
    components.update(schema.pop("$defs", {}))
    components["PredictRequest"] = schema
    components["Prediction"]["properties"].update(_prediction_schema(service.bundle.classes))
    document["paths"]["/predict"]["post"]["requestBody"] = {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}
        },
    }
    app.openapi_schema = document
    return document


def _prediction_schema(classes: list | None) -> dict:
    """An answer's prediction and probabilities as the model gives them: one of its class
    labels with a probability for each, or a number (regression)."""
    if classes is None:
        return {"prediction": {"type": "number"}, "probabilities": {"type": "null"}}
    names = [str(c) for c in classes]
    return {
        "prediction": {"enum": classes},
        "probabilities": {
            "type": "object",
            "properties": {name: {"type": "number"} for name in names},
            "required": names,
            "additionalProperties": False,
        },
    }
