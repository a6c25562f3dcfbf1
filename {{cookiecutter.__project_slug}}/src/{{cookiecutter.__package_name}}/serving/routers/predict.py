"""POST /predict: validate strictly, predict in micro-batches, answer with a request id."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from ..schema import (
    BOOLEAN_VALUES,
    LISTED,
    REQUEST_ID_HEADER,
    ErrorResponse,
    PredictResponse,
    scalar_label,
    scalar_values,
    true_false,
)
from ..service import Service, ServiceDep

log = logging.getLogger(__name__)
router = APIRouter(tags=["predict"])


def new_request_id(millis: int | None = None, random: int | None = None) -> str:
    """A UUIDv7 (RFC 9562) as 32 hex digits: milliseconds since the epoch (default: now), then
    random bits (`random`'s 80 bits instead, for an id made again: scripts/predict.py).

    Time-ordered ids land at the right edge of the prediction log's primary-key index, where
    random ones (UUIDv4) would each dirty a page anywhere in it: the writer's CPU per record
    then grows with the log (the template's bench/monitoring.py measures both).
    """
    if random is None:
        random = int.from_bytes(os.urandom(10))
    if millis is None:
        millis = time.time_ns() // 1_000_000
    high = (millis << 16) | 0x7000 | (random >> 68)  # version 7, then 12 random bits
    low = (0b10 << 62) | (random & ((1 << 62) - 1))  # the RFC 4122 variant, then 62 random bits
    return f"{high:016x}{low:016x}"


class Refusal(Exception):
    """A request answered with an error status and a short, input-free message."""

    def __init__(self, status: int, detail, headers: dict | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The JSON body, refusing another media type, a compressed body, one over `limit` bytes
    (declared or streamed chunked) and one that has not all arrived within `timeout` seconds (a
    slow client)."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise Refusal(
            415, f"the body must be JSON sent as Content-Type: application/json, not {media!r}"
        )
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", ""):
        raise Refusal(
            415, f"the body must be sent uncompressed (no Content-Encoding), not {encoding!r}"
        )
    too_large = f"request body is over the limit of {limit} bytes (SERVE_MAX_BODY_BYTES)"
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Refusal(413, too_large)
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise Refusal(413, too_large)
                chunks.append(chunk)
    except TimeoutError:
        raise Refusal(
            408, f"the request body did not arrive within {timeout} s (SERVE_READ_TIMEOUT_SECONDS)"
        ) from None
    except ClientDisconnect:  # nobody is left to answer; not a server error
        raise Refusal(499, "the client closed the connection before sending the body") from None
    return b"".join(chunks)


def parse(service: Service, body: bytes) -> list[dict]:
    """Validate the body against the training schema; the records as dicts."""
    try:
        payload = service.request_type.model_validate_json(body)
    except ValidationError as err:
        errors = err.errors(include_url=False, include_input=False, include_context=False)
        if any(e["type"] == "too_long" and tuple(e["loc"]) == ("records",) for e in errors):
            raise Refusal(
                413,
                f"a request holds at most {service.settings.max_records} records "
                "(SERVE_MAX_RECORDS)",
            ) from None
        raise Refusal(422, field_errors(errors[:MAX_ERRORS], service)) from None
    return [record.__dict__ for record in payload.records]


def field_errors(errors: list[dict], service: Service) -> list[dict]:
    """A 422's entries for pydantic's errors: where, what is allowed, and the error's type."""
    features = list(service.bundle.meta["features"])
    return [{"loc": _location(e), "msg": _message(e, features), "type": e["type"]} for e in errors]


# Pydantic lists every allowed category; a feature with hundreds (postal codes) would make
# each refused field kilobytes long.
MAX_MESSAGE = 300
MAX_NAME = 100  # characters of a field name an error's location repeats
MAX_ERRORS = 20  # errors a 422 lists: a client sends the rest again to learn of more


def _location(error: dict) -> list:
    """Where the error is, with a field name the client made up (an extra field) cut short:
    an answer never repeats a large input."""
    return [f"{part[:MAX_NAME]}..." if len(str(part)) > MAX_NAME else part for part in error["loc"]]


def _message(error: dict, features: list[str] | None = None) -> str:
    """The error's message, saying what is allowed: the features where a record has another
    field, null for a value a record lacks or has of the wrong type, and for a category no list
    too long to read and which JSON values a true/false or whole-number column takes besides its
    labels."""
    kind, in_record = error["type"], len(error["loc"]) == 3 and error["loc"][0] == "records"
    if kind == "extra_forbidden":
        if not in_record:
            return f"{error['msg']}: the body holds only records"
        listed = ", ".join((features or [])[:LISTED]) + (", ..." * (len(features or []) > LISTED))
        return f"not a feature of this model, whose features are: {listed}"
    if kind == "missing" and in_record:
        return f"{error['msg']}: a record sends every feature, null where its value is unknown"
    if kind != "literal_error":
        return f"{error['msg']}, or null where it is unknown" if in_record else error["msg"]
    if len(error["msg"]) > MAX_MESSAGE:
        return (
            "Input should be one of the categories in the training data, too many to list "
            "here: see the schema at /docs"
        )
    labels = re.findall(r"'([^']*)'", error["msg"])
    if labels and true_false(labels):
        return f"Input should be {BOOLEAN_VALUES}, or null where it is unknown"
    if labels and all(map(scalar_label, labels)):
        return f"{error['msg']}, or the JSON value it was made from: {scalar_values(labels)}"
    return error["msg"]


async def predict_records(service: Service, rows: list[dict], request_id: str) -> list[dict]:
    """Predict through the batcher, within the timeout."""
    try:
        return await asyncio.wait_for(
            service.batcher.submit(rows), service.settings.predict_timeout
        )
    except TimeoutError:
        raise Refusal(
            504, f"prediction took longer than {service.settings.predict_timeout} s"
        ) from None
    except ValueError as err:  # the model's own input check (scikit-learn's), past the schema's
        log.warning("the model refused request %s: %s", request_id, err)
        said = next(iter(str(err).strip().splitlines()), type(err).__name__)
        raise Refusal(422, f"the model cannot score these records: {said}") from None
    except Exception:
        log.exception("prediction failed for request %s", request_id)
        raise Refusal(500, "prediction failed; the request id is in the service log") from None


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses={
        200: {"headers": REQUEST_ID_HEADER},
        **{
            status: {"model": ErrorResponse, "description": description}
            | {"headers": REQUEST_ID_HEADER}
            for status, description in (
                (408, "body not received in time"),
                (413, "body or batch over the limit"),
                (415, "body not sent as uncompressed application/json"),
                (422, f"invalid input, one entry per invalid value (the first {MAX_ERRORS})"),
                (500, "prediction failed"),
                (503, "not ready or overloaded"),
                (504, "prediction timed out"),
            )
        },
    },
)
async def predict(request: Request, service: ServiceDep) -> Response:
    """Predict one or more records: `{"records": [{feature: value, ...}, ...]}`."""
    request_id = new_request_id()
    if service.load_error:  # it stays so: no Retry-After
        failed = f"model not ready: {service.load_error}"
        return error_response(503, failed, request_id)
    if not service.ready:
        unready = f"model not ready: {service.unready}"
        return error_response(503, unready, request_id, {"Retry-After": "1"})
    started = time.perf_counter()
    settings = service.settings
    try:  # a request takes an in-flight slot only once its body is in
        body = await read_body(request, settings.max_body_bytes, settings.read_timeout)
    except Refusal as refusal:
        return error_response(refusal.status, refusal.detail, request_id, refusal.headers)
    if service.in_flight >= settings.max_in_flight:
        return error_response(
            503, "overloaded: too many requests in flight", request_id, {"Retry-After": "1"}
        )
    service.in_flight += 1
    try:
        rows = parse(service, body)
        results = await predict_records(service, rows, request_id)
    except Refusal as refusal:
        return error_response(refusal.status, refusal.detail, request_id, refusal.headers)
    finally:
        service.in_flight -= 1
    service.telemetry.predictions([r["prediction"] for r in results])
    meta = service.bundle.meta
    if service.prediction_log is not None:
        latency_ms = (time.perf_counter() - started) * 1000
        log_predictions(service, request_id, rows, results, latency_ms)
    body = {
        "request_id": request_id,
        "model_name": meta["model_name"],
        "model_version": meta["version"],
        "predictions": results,
    }
    return Response(
        json.dumps(body), media_type="application/json", headers={"X-Request-ID": request_id}
    )


def log_predictions(
    service: Service,
    request_id: str,
    rows: list[dict],
    results: list[dict],
    latency_ms: float,
    now: datetime | None = None,
) -> None:
    """Hand one record per prediction to the prediction log (a queue append, never a wait), as
    a tuple of RECORD_FIELDS: the cheapest form to build and to keep until written. Stamped
    `now`, unless a backfill gives another time (scripts/predict.py)."""
    meta, now = service.bundle.meta, now or datetime.now(UTC)
    name, version = meta["model_name"], meta["version"]
    service.prediction_log.log(
        [
            (
                request_id,
                index,
                now,
                name,
                version,
                row,
                result["prediction"],
                result.get("probabilities"),
                latency_ms,
            )
            for index, (row, result) in enumerate(zip(rows, results, strict=True))
        ]
    )


def error_response(
    status: int, detail, request_id: str | None = None, headers: dict | None = None
) -> JSONResponse:
    """An error body (ErrorResponse): what went wrong and the request id (a new one unless
    given), never the input or a traceback."""
    request_id = request_id or new_request_id()
    return JSONResponse(
        {"detail": detail, "request_id": request_id},
        status_code=status,
        headers={**(headers or {}), "X-Request-ID": request_id},
    )
