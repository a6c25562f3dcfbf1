"""Liveness, readiness and the version of the model being served."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..schema import REQUEST_ID_HEADER, ErrorResponse, NotReady, Ready, Version
from ..service import ServiceDep
from .predict import error_response

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is alive."""
    return {"status": "alive"}


@router.get(
    "/ready",
    responses={
        200: {"model": Ready, "description": "the model it serves"},
        503: {"model": NotReady, "description": "model not loaded, or shutting down, and why"},
    },
)
async def ready(service: ServiceDep) -> JSONResponse:
    """The model is loaded and verified, and the service is not shutting down."""
    if service.ready:
        meta = service.bundle.meta
        return JSONResponse(
            {"status": "ready", "model_name": meta["model_name"], "model_version": meta["version"]}
        )
    return JSONResponse({"status": "not ready", "reason": service.unready}, status_code=503)


# HEAD too, as some load balancers' health checks send it (kept out of the OpenAPI schema).
for _path, _endpoint in (("/health", health), ("/ready", ready)):
    router.add_api_route(_path, _endpoint, methods=["HEAD"], include_in_schema=False)


@router.get(
    "/version",
    responses={
        200: {"model": Version, "description": "the model served"},
        503: {
            "model": ErrorResponse,
            "description": "no model served, and why",
            "headers": REQUEST_ID_HEADER,
        },
    },
)
async def version(service: ServiceDep) -> JSONResponse:
    """Which model answers: name, version, data hash, git commit, trained and promoted dates,
    and when and why a rollback restored it (null if none did)."""
    if service.bundle is None:
        return error_response(503, f"no model served: {service.load_error or 'loading'}")
    meta = service.bundle.meta
    lineage = meta["lineage"]
    return JSONResponse(
        {
            "model_name": meta["model_name"],
            "model_version": meta["version"],
            "task": meta["task"],
            "data_hash": lineage.get("data.content_hash"),
            "git_commit": lineage.get("git.commit"),
            "trained_at": lineage.get("trained_at"),
            "promoted_at": lineage.get("promoted_at"),
            "rolled_back_at": lineage.get("rolled_back_at"),
            "rollback_reason": lineage.get("rollback_reason"),
            "run_id": lineage.get("run_id"),
        }
    )
