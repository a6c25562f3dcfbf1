"""Run the app under uvicorn: one or more workers, graceful on SIGTERM."""

from __future__ import annotations

import signal

import uvicorn

GRACEFUL_SECONDS = 25  # in-flight requests get this long; the process is gone within 30 s


def _exit_cleanly(sig, frame) -> None:
    """Exit with status 0: the signal asked for a stop, and the stop went as planned."""
    raise SystemExit(0)


def run(host: str, port: int, workers: int) -> None:
    """Serve the app factory on host:port with `workers` processes."""
    # uvicorn re-raises SIGTERM once drained; with the default action the process would then
    # die by the signal (status 143) although every request was answered.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        f"{__package__}.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        access_log=False,
        log_level="info",
        # Workers import the model stack before answering uvicorn's health check.
        timeout_worker_healthcheck=120,
    )
