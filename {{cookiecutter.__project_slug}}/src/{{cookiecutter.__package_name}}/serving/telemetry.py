"""Prometheus metrics in the text exposition format, from plain counters (no dependency).

With several workers (server.Workers), each publishes its counts to a file of a folder the
supervisor shares (SHARED_DIR) every PUBLISH_SECONDS, and /metrics, whichever worker answers it,
sums every worker's: its own as they are, the others' as last published. The answering worker
publishes its own first, so a later scrape answered by another worker counts at least as much,
and a worker that exited leaves its last file: the sums never go down while the service runs.
"""

from __future__ import annotations

import asyncio
import json
import os
from bisect import bisect_left
from collections import Counter
from contextlib import suppress
from pathlib import Path

SHARED_DIR = "SERVE_METRICS_DIR"
PUBLISH_SECONDS = 1.0

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def sample(name: str, value, /, **labels: str) -> str:
    """One exposition line: name, labels in braces (values escaped), value."""
    # Positional-only: model_info has a label called "name".
    if not labels:
        return f"{name} {value}"
    pairs = ",".join(f'{key}="{_escaped(label)}"' for key, label in sorted(labels.items()))
    return name + "{" + pairs + "} " + str(value)


def _escaped(label: str) -> str:
    """A label value as the exposition format writes it: a class label may hold \\, " or a
    line break."""
    return label.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def family(name: str, kind: str, help_text: str) -> list[str]:
    """The HELP and TYPE lines that open a metric family."""
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


class Histogram:
    """Cumulative buckets, a sum and a count."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Record one value."""
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def state(self) -> dict:
        """The counts, JSON-ready."""
        return {"counts": self.counts, "total": self.total, "count": self.count}

    def add(self, state: dict) -> None:
        """Add another histogram's counts (the same buckets)."""
        self.counts = [a + b for a, b in zip(self.counts, state["counts"], strict=True)]
        self.total += state["total"]
        self.count += state["count"]

    def lines(self, name: str) -> list[str]:
        """Exposition lines for this histogram."""
        out, running = [], 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += count
            le = "+Inf" if bound == float("inf") else str(bound)
            out.append(sample(f"{name}_bucket", running, le=le))
        return [*out, f"{name}_sum {self.total}", f"{name}_count {self.count}"]


class Telemetry:
    """Everything /metrics reports."""

    def __init__(self, prediction_buckets: tuple[float, ...] | None = None) -> None:
        self.requests: Counter = Counter()
        self.latency = Histogram(LATENCY_BUCKETS)
        self.classes: Counter = Counter()
        self.values = Histogram(prediction_buckets) if prediction_buckets else None
        self.model: dict[str, str] = {}
        # More counters: name -> (help text, a callable reading the value).
        self.extra: dict[str, tuple[str, callable]] = {}

    def request(self, path: str, status: int, seconds: float) -> None:
        """Count one request, and its latency for /predict."""
        self.requests[(path, status)] += 1
        if path == "/predict":
            self.latency.observe(seconds)

    def predictions(self, values: list) -> None:
        """Count predicted classes, or observe predicted values."""
        if self.values is None:
            self.classes.update(str(v) for v in values)
        else:
            for value in values:
                self.values.observe(float(value))

    def state(self) -> dict:
        """Every count, JSON-ready: what a worker publishes for the others' /metrics."""
        return {
            "requests": [[path, status, n] for (path, status), n in self.requests.items()],
            "latency": self.latency.state(),
            "classes": dict(self.classes),
            "values": self.values.state() if self.values else None,
            "extra": {name: read() for name, (_, read) in self.extra.items()},
        }

    def publish(self, folder: Path, state: dict | None = None) -> None:
        """Write this worker's counts (`state`, default now) to its file of the shared folder,
        whole or not at all."""
        path = Path(folder) / f"{os.getpid()}.json"
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps(state or self.state()))
        partial.replace(path)

    def with_others(self, folder: Path) -> Telemetry:
        """This worker's telemetry, published first, plus every other worker's last published
        counts."""
        states = [self.state()]
        with suppress(OSError):  # a full disk: the next scrape may be answered with less
            self.publish(folder, states[0])
        for path in Path(folder).glob("*.json"):
            if path.stem != str(os.getpid()):
                with suppress(OSError, ValueError):  # replaced (publish) as it was read
                    states.append(json.loads(path.read_text()))
        total = Telemetry(self.values.buckets if self.values else None)
        total.model = self.model
        sums = Counter()
        for state in states:
            total.add(state)
            sums.update(state["extra"])
        total.extra = {
            name: (help_text, lambda n=sums[name]: n) for name, (help_text, _) in self.extra.items()
        }
        return total

    def add(self, state: dict) -> None:
        """Add another worker's counts (Telemetry.state)."""
        self.requests.update({(path, status): n for path, status, n in state["requests"]})
        self.latency.add(state["latency"])
        self.classes.update(state["classes"])
        if self.values and state["values"]:
            self.values.add(state["values"])

    def render(self) -> str:
        """The exposition text."""
        answered = "Requests answered, by path (other: unknown) and status"
        lines = family("http_requests_total", "counter", answered)
        lines += [
            sample("http_requests_total", n, path=p, status=str(s))
            for (p, s), n in sorted(self.requests.items())
        ]
        lines += [
            *family(
                "predict_latency_seconds",
                "histogram",
                "Time to answer POST /predict, refusals (4xx, 5xx) too",
            ),
            *self.latency.lines("predict_latency_seconds"),
        ]
        if self.values is None:
            lines += family("predictions_total", "counter", "Records predicted, by class")
            lines += [
                sample("predictions_total", n, **{"class": c})
                for c, n in sorted(self.classes.items())
            ]
        else:
            lines += family("prediction_value", "histogram", "Predicted values")
            lines += self.values.lines("prediction_value")
        if self.model:
            lines += family("model_info", "gauge", "The model served, by name and version: 1")
            lines.append(sample("model_info", 1, **self.model))
        for name, (help_text, read) in sorted(self.extra.items()):
            lines += [*family(name, "counter", help_text), f"{name} {read()}"]
        return "\n".join(lines) + "\n"


def shared_dir() -> Path | None:
    """The folder where the workers publish their counts; None with one worker."""
    folder = os.environ.get(SHARED_DIR)
    return Path(folder) if folder else None


async def publish_until_cancelled(telemetry: Telemetry, folder: Path) -> None:
    """Publish this worker's counts every PUBLISH_SECONDS, and once more when cancelled (at
    shutdown), so the sums keep its last requests."""
    try:
        while True:
            with suppress(OSError):  # a full disk: the others' sums miss this worker's news
                telemetry.publish(folder)
            await asyncio.sleep(PUBLISH_SECONDS)
    finally:
        with suppress(OSError):
            telemetry.publish(folder)
