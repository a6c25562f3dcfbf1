"""Serve the model bundle over HTTP (FastAPI under uvicorn)."""

from __future__ import annotations

import argparse
import os

# One OpenMP thread per worker: more threads fight over the cores (set before numpy loads).
os.environ.setdefault("OMP_NUM_THREADS", "1")

from {{ cookiecutter.__package_name }}.config import ServeSettings, database_url
from {{ cookiecutter.__package_name }}.errors import PipelineError
from {{ cookiecutter.__package_name }}.serving.server import run


def main(argv: list[str] | None = None) -> int:
    """Serve on --host:--port with --workers processes; SIGTERM drains in-flight requests."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port} is not a port number (1-65535)")
    if args.workers < 1:
        parser.error(f"--workers {args.workers} must be at least 1")
    try:  # each worker reads them again; a bad one is told here once, not by every worker
        settings = ServeSettings.from_env()
        if settings.prediction_log:  # a URL that cannot name a database; one away is no error
            database_url(settings.monitoring_database_url, "MONITORING_DATABASE_URL")
    except PipelineError as err:
        parser.error(str(err))
    run(args.host, args.port, args.workers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
