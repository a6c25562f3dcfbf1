"""Run the app under uvicorn, marking the service not ready as soon as SIGTERM arrives."""

from __future__ import annotations

import uvicorn
from uvicorn.supervisors import Multiprocess

from .service import DRAINING

GRACEFUL_SECONDS = 25  # in-flight requests get this long; the process is gone within 30 s


class GracefulServer(uvicorn.Server):
    """A uvicorn server whose /ready turns 503 the moment shutdown begins."""

    def handle_exit(self, sig, frame) -> None:
        DRAINING.set()
        super().handle_exit(sig, frame)


def run(host: str, port: int, workers: int) -> None:
    """Serve the app factory on host:port with `workers` processes."""
    config = uvicorn.Config(
        f"{__package__}.main:create_app", factory=True, host=host, port=port, workers=workers,
        timeout_graceful_shutdown=GRACEFUL_SECONDS, access_log=False, log_level="info",
    )
    server = GracefulServer(config)
    if workers > 1:
        Multiprocess(config, target=server.run, sockets=[config.bind_socket()]).run()
    else:
        server.run()
