"""The service's state: settings, the loaded bundle, the batcher, telemetry and readiness."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, Request

from ..config import ServeSettings
from ..data import feature_frame
from ..errors import PipelineError
from ..monitoring.prediction_log import PredictionLog
from . import bundle as bundles
from .batcher import MicroBatcher
from .compiled import FastPath, compile_model
from .schema import UNSEEN_PROBE, request_model
from .server import PINNED_SHA256
from .telemetry import Telemetry

log = logging.getLogger(__name__)


class _Flag:
    """A flag a signal handler may set: threading.Event.set() takes a lock, and a second signal
    arriving inside it runs the handler again on the same thread, which then waits forever on
    that lock (make and the shell both forward a stop to the server)."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        """Raise the flag."""
        self._set = True

    def is_set(self) -> bool:
        """Whether the flag was raised."""
        return self._set


# Set when SIGTERM or SIGINT arrives: from then on /ready answers 503 while requests drain.
DRAINING = _Flag()


@dataclass
class Service:
    """Everything a request handler needs."""

    settings: ServeSettings
    telemetry: Telemetry = field(default_factory=Telemetry)
    bundle: bundles.Bundle | None = None
    request_type: Any = None
    batcher: MicroBatcher | None = None
    in_flight: int = 0
    load_error: str | None = None
    prediction_log: PredictionLog | None = None
    # The numpy version of the model's preprocessing, when it reproduces the model exactly.
    fast_path: FastPath | None = None
    # Whether requests may send categories training never saw (the model predicts them).
    open_categories: bool = False

    @property
    def ready(self) -> bool:
        """Loaded, verified, and not shutting down."""
        return self.bundle is not None and self.batcher is not None and not DRAINING.is_set()

    @property
    def unready(self) -> str:
        """Why the service is not ready: shutting down, the load's error, or still loading."""
        return "shutting down" if DRAINING.is_set() else (self.load_error or "loading")

    def load(self) -> None:
        """Load and verify the bundle; on failure stay up but not ready, and say why."""
        try:
            loaded = bundles.load(self.settings.bundle_dir)
            _refuse_a_bundle_changed_since_start(loaded, self.settings.bundle_dir)
            self.predict_rows([loaded.meta["example"]], loaded)
            fast_path = None
            if self.settings.fast_path:
                fast_path = compile_model(loaded.model, loaded.meta)
            else:
                log.info("SERVE_FAST_PATH=0: serving through the model's own pipeline")
            open_categories = self._takes_unseen_categories(loaded)
            prediction_log = self._prediction_log(loaded.meta)
        except (PipelineError, ValueError, KeyError, TypeError) as err:
            self.load_error = str(err)
            log.error("service NOT READY (it stays up, answering 503): %s", err)
            return
        self.bundle, self.fast_path = loaded, fast_path
        self.open_categories = open_categories
        self.request_type = request_model(loaded.meta, self.settings.max_records, open_categories)
        self.telemetry.model = {
            "name": loaded.meta["model_name"],
            "version": loaded.meta["version"],
        }
        if loaded.meta["task"] == "regression":
            self.telemetry = _with_value_buckets(self.telemetry, loaded.meta)
        # Batches the fast path predicts within compiled.QUICK_SECONDS run on the event loop.
        quick_rows = fast_path.quick_rows if fast_path else 0
        self.batcher = MicroBatcher(self.predict_rows, self.settings.max_batch_rows, quick_rows)
        self.batcher.start()
        if prediction_log is None:
            log.warning("PREDICTION_LOG=0: predictions are NOT logged, monitoring sees nothing")
            return
        self.prediction_log = prediction_log
        self.prediction_log.start()
        self.telemetry.extra = {
            f"prediction_log_{name}_total": (help_text, _reader(self.prediction_log, name))
            for name, help_text in LOG_COUNTERS.items()
        }

    def _takes_unseen_categories(self, loaded: bundles.Bundle) -> bool:
        """Whether the model predicts a record of categories training never saw (as a one-hot
        encoder with handle_unknown="ignore" does): then requests may send them, else they get
        422 naming the field."""
        features = loaded.meta["features"]
        unseen = {name: UNSEEN_PROBE for name, kind in features.items() if kind == "categorical"}
        if not unseen:
            return False
        try:
            self.predict_rows([{**loaded.meta["example"], **unseen}], loaded)
        except Exception as err:  # the model's own refusal, whatever its type
            log.info("categories training never saw get 422: the model refuses them (%s)", err)
            return False
        log.info("categories training never saw are predicted: the model takes them")
        return True

    def _prediction_log(self, meta: dict) -> PredictionLog | None:
        """The prediction log for the bundle's model, unless PREDICTION_LOG=0; a spool folder
        that cannot be made, or an unusable MONITORING_DATABASE_URL (a PipelineError naming it),
        stops the service being ready."""
        if not self.settings.prediction_log:
            return None
        try:
            return PredictionLog(
                self.settings.monitoring_database_url,
                self.settings.spool_dir,
                spool_cap_bytes=self.settings.spool_cap_bytes,
                model_version=meta["version"],
                profile=meta.get("profile"),  # for the rollups; bundles before them lack it
            )
        except OSError as err:
            raise PipelineError(
                f"the prediction log's spool folder {self.settings.spool_dir} cannot be used "
                f"({err.strerror or err}): set PREDICTION_LOG_SPOOL_DIR to a writable folder"
            ) from err

    async def close(self) -> None:
        """Stop predicting, then write out every queued prediction-log record."""
        if self.batcher:
            await self.batcher.stop()
        if self.prediction_log:
            await asyncio.to_thread(self.prediction_log.close)

    def predict_rows(self, rows: list[dict], loaded: bundles.Bundle | None = None) -> list[dict]:
        """Predict rows in one model call; probabilities by class for classification."""
        loaded = loaded or self.bundle
        regression = loaded.meta["task"] == "regression"
        if self.fast_path and loaded is self.bundle:
            output = self.fast_path.predict(rows)
        else:
            frame = feature_frame(rows, loaded.meta["features"])
            model = loaded.model
            output = model.predict(frame) if regression else model.predict_proba(frame)
        if regression:
            return [{"prediction": float(v)} for v in output]
        classes = loaded.classes
        labels = np.asarray(classes, dtype=object)[output.argmax(axis=1)]
        names = [str(c) for c in classes]
        return [
            {"prediction": label, "probabilities": dict(zip(names, map(float, row), strict=True))}
            for label, row in zip(labels.tolist(), output, strict=True)
        ]


def _refuse_a_bundle_changed_since_start(loaded: bundles.Bundle, bundle_dir) -> None:
    """A worker the supervisor restarted serves the model the service started with, or none:
    never another version beside the other workers'."""
    pinned = os.environ.get(PINNED_SHA256)
    if pinned and loaded.meta["sha256"] != pinned:
        raise PipelineError(
            f"the bundle in {bundle_dir} changed since the service started (it now holds "
            f"v{loaded.meta['version']}): this restarted worker serves nothing rather than "
            "another version than the others; restart the service to serve the new bundle"
        )


# The prediction log's counters on /metrics (PredictionLog.counts): each worker counts its own,
# /metrics gives the sum over the workers (telemetry.py).
LOG_COUNTERS = {
    "logged": "Prediction-log records stored in the database (all workers)",
    "spooled": "Prediction-log records written to the spool, the database away (all workers)",
    "dropped": "Prediction-log records lost: past the spool cap, or refused as data",
}


def _reader(prediction_log: PredictionLog, name: str):
    """A callable reading one of the prediction log's counters, for /metrics."""
    return lambda: prediction_log.counts[name]


def watch_for_shutdown() -> None:
    """Turn /ready to 503 the moment the server is told to stop, before requests drain.

    Chains onto the handlers uvicorn installed in this process (each worker has its own);
    skipped where the app does not run on the main thread (in-process tests).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if callable(previous):
            signal.signal(
                sig, lambda signum, frame, chained=previous: _drain(chained, signum, frame)
            )


def _drain(chained, signum, frame) -> None:
    """Mark the service draining, then let the server's own handler stop it."""
    DRAINING.set()
    chained(signum, frame)


def _with_value_buckets(telemetry: Telemetry, meta: dict) -> Telemetry:
    """Telemetry whose prediction histogram spans the training range of the target."""
    fresh = Telemetry(
        prediction_buckets=tuple(
            meta.get("prediction_buckets") or (-1e3, -1e2, -10, 0, 10, 1e2, 1e3, 1e4)
        )
    )
    fresh.model = telemetry.model
    return fresh


async def get_service(request: Request) -> Service:
    """The app's service, for handlers."""
    # async: FastAPI runs a plain-def dependency on its thread pool, a thread hop per request.
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]
