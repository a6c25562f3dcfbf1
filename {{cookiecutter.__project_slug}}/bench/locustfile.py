"""Load-test a running prediction service: `make load-test URL=... USERS=... DURATION=...`.

Every simulated user POSTs one record to /predict and sends the next one as soon as the answer
arrives (no think time), so USERS is the concurrency. The record is the example the service
publishes in its OpenAPI document (each feature's middle or most frequent training value); set
LOAD_TEST_BODY to a JSON file to send another body. Once every user is running (after the
spawn ramp), each request's latency is recorded exactly, and at the end one line gives req/s,
p50 and p99 in milliseconds and the failures: the figures the template's bench/serving.py
prints. Locust's own table, printed too, also counts the ramp and rounds latencies to whole
milliseconds.

Locust runs in one process and is itself CPU-bound: above roughly 1,000-2,000 req/s it measures
its own limit, so run it from another machine than the service for high loads.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

from locust import FastHttpUser, events, task

HEADERS = {"Content-Type": "application/json"}


class Recorder:
    """Exact latencies of successful /predict requests made while every user is running."""

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.failures = 0
        self.started: float | None = None
        self.stopped: float | None = None
        self.host = ""

    def summary(self) -> str:
        """One line: req/s, p50, p99, failures."""
        ordered = sorted(self.latencies_ms)
        count = len(ordered)
        if not count or self.started is None:
            failed = f" ({self.failures} failed)" if self.failures else ""
            return (
                f"load-test: no request was answered after the ramp{failed}: is the service up, "
                "and DURATION longer than the ramp (USERS / SPAWN_RATE seconds)?"
            )
        seconds = (self.stopped or time.perf_counter()) - self.started

        def pct(q: float) -> float:
            return ordered[min(count - 1, int(q * count))]

        return (
            f"load-test: {count / seconds:.0f} req/s, p50 {pct(0.50):.2f} ms, "
            f"p99 {pct(0.99):.2f} ms, {self.failures} failed of {count + self.failures} "
            f"requests in {seconds:.1f} s after the ramp (Locust's table counts the ramp too)"
        )


RECORDER = Recorder()


def example_body(host: str) -> bytes:
    """LOAD_TEST_BODY's content, or one record: the example in the service's OpenAPI document."""
    if os.environ.get("LOAD_TEST_BODY"):
        return Path(os.environ["LOAD_TEST_BODY"]).read_bytes()
    with urllib.request.urlopen(f"{host.rstrip('/')}/openapi.json", timeout=10) as response:
        document = json.load(response)
    schema = document["components"]["schemas"]["PredictRequest"]
    return json.dumps(schema["examples"][0]).encode()


@events.spawning_complete.add_listener
def start_recording(**_) -> None:
    """Measure from the moment every user is running."""
    RECORDER.started = time.perf_counter()


@events.test_stopping.add_listener
def stop_recording(**_) -> None:
    """Stop measuring before users are stopped."""
    RECORDER.stopped = time.perf_counter()


@events.request.add_listener
def record(name: str, response_time: float, exception, **_) -> None:
    """Keep the exact latency of each request made in the measured window."""
    if RECORDER.started is None or RECORDER.stopped is not None or name != "/predict":
        return
    if exception is None:
        RECORDER.latencies_ms.append(response_time)
    else:
        RECORDER.failures += 1


@events.init.add_listener
def remember_host(environment, **_) -> None:
    """The URL under test, for the summary."""
    RECORDER.host = environment.host


@events.quitting.add_listener
def fail_without_answers(environment, **_) -> None:
    """A run in which no request was answered measured nothing: exit non-zero."""
    if not RECORDER.latencies_ms:
        environment.process_exit_code = 1


@events.quit.add_listener
def print_summary(**_) -> None:
    """Print the figures last, after Locust's own table."""
    print(f"{RECORDER.host}: {RECORDER.summary()}", flush=True)


class Client(FastHttpUser):
    """POST the same one-record body to /predict, back to back."""

    body: bytes | None = None

    def on_start(self) -> None:
        """Fetch the body once for all users."""
        if Client.body is None:
            Client.body = example_body(self.host)

    @task
    def predict(self) -> None:
        """One prediction; any status but 200 counts as a failure."""
        self.client.post("/predict", data=Client.body, headers=HEADERS)
