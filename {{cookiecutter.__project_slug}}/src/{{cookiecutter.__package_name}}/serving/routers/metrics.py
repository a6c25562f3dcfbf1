"""Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from ..service import ServiceDep
from ..telemetry import shared_dir

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(service: ServiceDep) -> PlainTextResponse:
    """Requests by status, latency histogram, prediction distribution, model version."""
    folder = shared_dir()  # several workers: the sums over all of them
    telemetry = service.telemetry.with_others(folder) if folder else service.telemetry
    return PlainTextResponse(telemetry.render(), media_type="text/plain; version=0.0.4")
