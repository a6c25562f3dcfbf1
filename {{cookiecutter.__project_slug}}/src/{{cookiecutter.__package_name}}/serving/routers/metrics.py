"""Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from ..service import ServiceDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(service: ServiceDep) -> PlainTextResponse:
    """Requests by status, latency histogram, prediction distribution, model version."""
    return PlainTextResponse(service.telemetry.render(), media_type="text/plain; version=0.0.4")
