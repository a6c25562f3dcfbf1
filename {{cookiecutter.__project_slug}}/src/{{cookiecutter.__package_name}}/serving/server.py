"""Run the app under uvicorn: one or more workers, graceful on SIGTERM.

With several workers, each listens on a socket of its own bound with SO_REUSEPORT, and the
kernel spreads incoming connections over them evenly. (Sharing one listening socket, as
uvicorn's own supervisor does, lets whichever worker wakes first accept every pending
connection: a client or proxy opening a few keep-alive connections at once could land all of
them on one worker, leaving the others idle.)
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
from pathlib import Path

import uvicorn

from .telemetry import SHARED_DIR

log = logging.getLogger(__name__)

APP = f"{__package__}.main:create_app"
GRACEFUL_SECONDS = 25  # in-flight requests get this long; the process is gone within 30 s
LOG_FORMAT = "%(levelname)s:     %(name)s: %(message)s"
BACKLOG = 2048  # uvicorn's default
RESTART_DELAY_SECONDS = 1.0
OPTIONS = {
    "timeout_graceful_shutdown": GRACEFUL_SECONDS,
    "access_log": False,
    "log_level": "info",
}


def _exit_cleanly(sig, frame) -> None:
    """Exit with status 0: the signal asked for a stop, and the stop went as planned."""
    raise SystemExit(0)


def run(host: str, port: int, workers: int, app: str = APP, factory: bool = True) -> None:
    """Serve the app (an import string; by default the service's factory) on host:port with
    `workers` processes."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    # Before loading the model (seconds): a port in use would otherwise show only after it.
    _port_free_or_exit(host, port)
    options = {**OPTIONS, "factory": factory}
    if workers > 1 and hasattr(socket, "SO_REUSEPORT"):
        Workers(host, port, workers, app, options).run()
        return
    # uvicorn re-raises SIGTERM once drained; with the default action the process would then
    # die by the signal (status 143) although every request was answered.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    # Workers (if any) import the model stack before answering uvicorn's health check.
    uvicorn.run(
        app, host=host, port=port, workers=workers, timeout_worker_healthcheck=120, **options
    )


def _port_free_or_exit(host: str, port: int) -> None:
    """Exit with a clear message if anything holds host:port, even a server sharing it by
    SO_REUSEPORT."""
    try:
        listener(host, port, listen=False, shared=False).close()
    except OSError as err:
        log.error("cannot serve on %s:%d: %s", host, port, err)
        raise SystemExit(1) from None


def listener(host: str, port: int, listen: bool = True, shared: bool = True) -> socket.socket:
    """A TCP socket on host:port that other SO_REUSEPORT sockets of this user can share
    (unless not `shared`)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if listen:
            sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def serve_worker(host: str, port: int, app: str, options: dict, supervisor: int) -> None:
    """One worker process: its own listening socket, one uvicorn server."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    signal.signal(signal.SIGTERM, _exit_cleanly)
    _stop_with(supervisor)
    config = uvicorn.Config(app, host=host, port=port, **options)
    uvicorn.Server(config).run(sockets=[listener(host, port)])


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _stop_with(supervisor: int) -> None:
    """Have Linux send this worker SIGTERM (a graceful stop) when the supervisor dies, even by
    kill -9: an orphan would keep serving, and hold the port a restart needs."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: orphans are possible there
        return
    if os.getppid() != supervisor:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


class Workers:
    """Keep `count` worker processes serving until SIGTERM or SIGINT, then stop them."""

    def __init__(self, host: str, port: int, count: int, app: str, options: dict) -> None:
        self.host, self.port, self.count = host, port, count
        self.app, self.options = app, options
        self._stop = threading.Event()
        self._context = multiprocessing.get_context("spawn")

    def run(self) -> None:
        """Start the workers, replace any that dies, stop them all on a signal."""
        try:
            # Bound, never listening (so never given connections): holds the port meanwhile.
            held = listener(self.host, self.port, listen=False)
        except OSError as err:
            log.error("cannot serve on %s:%d: %s", self.host, self.port, err)
            raise SystemExit(1) from None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())
        temporary = _shared_dir()
        snapshot = snapshot_bundle()
        pin_bundle()
        workers = [self._start() for _ in range(self.count)]
        log.info("serving on http://%s:%d with %d workers", self.host, self.port, self.count)
        while not self._stop.wait(RESTART_DELAY_SECONDS):
            for i, worker in enumerate(workers):
                if not worker.is_alive():
                    log.error("worker %d exited (%s); restarting it", worker.pid, worker.exitcode)
                    workers[i] = self._start()
        _stop(workers)
        held.close()
        for folder in (temporary, snapshot):
            if folder:
                shutil.rmtree(folder, ignore_errors=True)

    def _start(self):
        """A started worker process."""
        arguments = (self.host, self.port, self.app, self.options, os.getpid())
        worker = self._context.Process(target=serve_worker, args=arguments)
        worker.start()
        return worker


def _shared_dir() -> Path | None:
    """The folder where the workers publish their counts, so /metrics sums them all
    (telemetry.py): SERVE_METRICS_DIR emptied of a former run's counts, or else a temporary
    folder, returned to be removed at the end. A folder that cannot be made or emptied stops
    the service (exit 2), before anything needs removing."""
    given = os.environ.get(SHARED_DIR)
    if given:
        try:
            Path(given).mkdir(parents=True, exist_ok=True)
            for stale in Path(given).glob("*.*"):
                if stale.suffix in (".json", ".tmp"):
                    stale.unlink(missing_ok=True)
        except OSError as err:
            log.error(
                "%s=%s cannot be used (%s): give a folder the service may write, or leave it "
                "unset for a temporary one",
                SHARED_DIR,
                given,
                err.strerror or err,
            )
            raise SystemExit(2) from None
        return None
    os.environ[SHARED_DIR] = tempfile.mkdtemp(prefix="serve-metrics-")
    return Path(os.environ[SHARED_DIR])


def snapshot_bundle() -> Path | None:
    """Copy the bundle, as it is now, for every worker to load, the ones restarted later too: a
    `make bundle` rewriting the folder meanwhile changes nothing until the service restarts.
    The copy's folder, to be removed at the end; None where there is no folder or no room for
    a copy (workers then load the folder itself, pinned: pin_bundle)."""
    from ..config import ServeSettings

    source = ServeSettings.from_env().bundle_dir
    if not source.is_dir():
        return None
    folder = Path(tempfile.mkdtemp(prefix="serve-bundle-"))
    try:
        shutil.copytree(source, folder / "model")
    except OSError as err:
        log.warning("serving %s itself: no copy of it could be made (%s)", source, err)
        shutil.rmtree(folder, ignore_errors=True)
        return None
    os.environ["MODEL_BUNDLE_DIR"] = str(folder / "model")
    log.info("serving %s as it is now: the workers load a copy, %s", source, folder / "model")
    return folder


# The sha256 of the model file the service started with: where no copy could be made, a worker
# restarted after `make bundle` rewrote the folder would otherwise serve another version.
PINNED_SHA256 = "SERVE_PINNED_SHA256"


def pin_bundle() -> None:
    """Pass the bundle's model checksum, as it is now, to every worker started from here on."""
    from ..config import ServeSettings
    from .bundle import META_FILE

    meta = ServeSettings.from_env().bundle_dir / META_FILE
    # No readable bundle: nothing to pin, and each worker says why it is not ready.
    with contextlib.suppress(OSError, ValueError, KeyError):
        os.environ[PINNED_SHA256] = json.loads(meta.read_text())["sha256"]


def _stop(workers: list) -> None:
    """SIGTERM every worker (each drains its in-flight requests); kill any that overstays."""
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.join(GRACEFUL_SECONDS + 3)
        if worker.is_alive():
            log.error("worker %d did not stop in time; killed", worker.pid)
            worker.kill()
            worker.join()
