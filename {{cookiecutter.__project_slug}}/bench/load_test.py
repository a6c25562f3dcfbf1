"""`make load-test`: Locust against a prediction service (bench/locustfile.py), ending with one
line of req/s, p50 and p99.

Without --url it serves the bundle in build/model (`make bundle`) itself, on a free port of
127.0.0.1, with its prediction log in build/load-test/ instead of MONITORING_DATABASE_URL, and
stops it afterwards: thousands of copies of one record in the log `make monitor` reads would show
as drift of every feature. With --url it tests that service, whose prediction log takes every
request: a staging service, or one started with PREDICTION_LOG=0, not production.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from {{ cookiecutter.__package_name }}.cli import at_least_one, is_http_url

log = logging.getLogger("load_test")

SCRATCH = Path("build/load-test")
READY_SECONDS = 120


def free_port() -> int:
    """A port of 127.0.0.1 nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(url: str, server: subprocess.Popen) -> None:
    """Wait for /ready to answer 200; fail when the server exits or takes too long."""
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the service exited ({server.returncode}): see {SCRATCH}/serve.log")
        # Not listening yet, or 503 while the model loads (HTTPError is an OSError): poll again.
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/ready", timeout=2):
            return
        time.sleep(0.5)
    raise SystemExit(f"the service was not ready within {READY_SECONDS} s: see {SCRATCH}/serve.log")


def serve_scratch(workers: int) -> tuple[subprocess.Popen, str]:
    """Start scripts/serve.py on the bundle with a prediction log of its own; return it and
    its URL once ready."""
    if not Path("build/model/bundle.json").exists():
        raise SystemExit("no bundle in build/model: run `make bundle`, or give URL=")
    shutil.rmtree(SCRATCH, ignore_errors=True)
    SCRATCH.mkdir(parents=True)
    env = {
        **os.environ,
        "MODEL_BUNDLE_DIR": "build/model",
        "MONITORING_DATABASE_URL": f"sqlite:///{SCRATCH / 'monitoring.db'}",
        "PREDICTION_LOG_SPOOL_DIR": str(SCRATCH / "spool"),
    }
    port = free_port()
    command = [sys.executable, "scripts/serve.py", "--port", str(port), "--workers", str(workers)]
    with (SCRATCH / "serve.log").open("wb") as output:
        server = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, server)
    except BaseException:
        stop(server)
        raise
    log.info("serving build/model at %s, its prediction log in %s", url, SCRATCH)
    return server, url


def stop(server: subprocess.Popen) -> None:
    """SIGTERM the service's process group, as a deployment would stop it."""
    with contextlib.suppress(ProcessLookupError):  # gone already
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=40)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def positive(text: str) -> float:
    """A number above 0 (users started per second)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number above 0")
    return value


def run_time(text: str) -> str:
    """Locust's --run-time: seconds, or hours, minutes and seconds such as 30s, 2m, 1h30m."""
    if not (text.isdigit() or re.fullmatch(r"(?=\d)(\d+h)?(\d+m)?(\d+s)?", text)):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30s, 2m or 1h30m")
    return text


def service_url(text: str) -> str:
    """Empty (serve build/model), or an http(s) URL with a host."""
    if text and not is_http_url(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a URL such as http://127.0.0.1:8000")
    return text


def main(argv: list[str] | None = None) -> int:
    """Run Locust headless against --url, or against a scratch service; exit with its code."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--url", type=service_url, default="", help="a running service (default: build/model)"
    )
    parser.add_argument("--users", type=at_least_one, default=8, help="concurrent users")
    parser.add_argument("--spawn-rate", type=positive, default=8, help="users started per second")
    parser.add_argument("--duration", type=run_time, default="30s", help="e.g. 30s, 2m, 1h30m")
    parser.add_argument(
        "--workers", type=at_least_one, default=1, help="workers of the scratch service"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    server, url = None, args.url.rstrip("/")
    if url:
        log.warning(
            "every request lands in the prediction log of %s, which `make monitor` reads there: "
            "copies of one record look like drift of every feature. Load-test a staging "
            "service, or one started with PREDICTION_LOG=0; `make load-test` without URL= "
            "serves build/model with a log of its own",
            url,
        )
    else:
        server, url = serve_scratch(args.workers)
    locust = Path(sys.executable).with_name("locust")
    command = [str(locust), "-f", "bench/locustfile.py", "--headless", "--only-summary"]
    command += ["--host", url, "--users", str(args.users), "--spawn-rate", str(args.spawn_rate)]
    command += ["--run-time", args.duration, "--stop-timeout", "5"]
    try:
        return subprocess.run(command, check=False).returncode
    finally:
        if server is not None:
            stop(server)


if __name__ == "__main__":
    raise SystemExit(main())
