"""Predict a CSV or Parquet file in this process with the bundle `make serve` serves
(build/model), as the service does: each record checked as /predict checks it, the same model,
and every prediction in the prediction log, so `make monitor` sees a batch job's predictions as
it sees the service's.

Each row is logged as a request of its own. --at stamps the records with a past time instead
of now (ISO, UTC unless it gives an offset): a nightly job's night, a backfill of predictions
made elsewhere, or a try of `make monitor` over several days, one file per day. With --at a
row's request id is made from the time, the model version and its values, so a re-run (a
retried job, the file fixed after some rows were refused) logs no row twice. --out writes each
row's request_id and record_index (what `make outcomes` joins the actual values on), its
prediction and a classifier's probabilities, as `make send-batch` does. Rows the service would
refuse are left out and named (exit 1); the others are predicted and logged, each with its
share of the model call's time as its latency. The log's records reach the database before the
run ends, or its spool when the database is away, as the service's do.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from {{ cookiecutter.__package_name }} import data as datalib
from {{ cookiecutter.__package_name }}.batches import ROW_NUMBERS, answers, records, spans, write_answers
from {{ cookiecutter.__package_name }}.cli import run
from {{ cookiecutter.__package_name }}.config import ServeSettings, section
from {{ cookiecutter.__package_name }}.errors import PipelineError
from {{ cookiecutter.__package_name }}.serving.routers.predict import (
    field_errors,
    log_predictions,
    new_request_id,
)
from {{ cookiecutter.__package_name }}.serving.service import Service

log = logging.getLogger("predict")
# Rows per model call: large, as one call costs the same up to hundreds of rows (per tree and
# call for HistGradientBoosting).
PREDICT_ROWS = 2048


def past_time(text: str) -> datetime:
    """--at: an ISO time, UTC unless it gives an offset, not in the future."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO date or time, e.g. 2026-06-30T10:00"
        ) from None
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    if at > datetime.now(UTC):
        raise argparse.ArgumentTypeError(f"{text!r} is in the future: give a past time or none")
    return at


def checked(service: Service, rows: list[dict | None]) -> tuple[dict[int, dict], dict[int, str]]:
    """The records /predict would take, as it validates them, by file row, and why it would
    refuse the others (rows already None, unreadable, are neither)."""
    taken, refused = {}, {}
    for row, record in enumerate(rows):
        if record is None:
            continue
        try:
            body = json.dumps({"records": [record]})
            [valid] = service.request_type.model_validate_json(body).records
        except ValidationError as err:
            errors = err.errors(include_url=False, include_input=False, include_context=False)
            said = (f"{e['loc'][-1]}: {e['msg']}" for e in field_errors(errors, service))
            refused[row] = "; ".join(said)
            continue
        taken[row] = valid.__dict__
    return taken, refused


def request_ids(service: Service, taken: dict[int, dict], at: datetime | None) -> dict[int, str]:
    """A request id per file row. With --at, made from that time, the model version and the
    row's values (and how many identical rows came before it): a re-run of the same rows at the
    same time gets the same ids, which the prediction log holds once. Without it, new ones."""
    if at is None:
        return {row: new_request_id() for row in taken}
    millis, version = int(at.timestamp() * 1000), service.bundle.meta["version"]
    seen: Counter = Counter()
    ids = {}
    for row, record in taken.items():
        text = json.dumps([at.isoformat(), version, record], sort_keys=True, default=str)
        seen[text] += 1
        digest = hashlib.sha256(f"{text}\n{seen[text]}".encode()).digest()
        ids[row] = new_request_id(millis, int.from_bytes(digest[:10]))
    return ids


def keep_up(prediction_log, seconds: float = 10.0) -> None:
    """Wait, up to `seconds`, while the log's queue is over half full: a file is predicted
    faster than its records are written, and a full queue spills to the spool, which the
    service needs (a request never waits), but a batch job need not."""
    deadline = time.monotonic() + seconds
    while prediction_log.counts["queued"] > prediction_log.queue_size // 2:
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)


def predict(
    service: Service, rows: list[dict | None], at: datetime | None, unreadable: dict[int, str]
) -> list[dict]:
    """Predict the rows /predict would take, PREDICT_ROWS at a time, and log each as a request
    of its own; what each got (batches.answers). The others, and the `unreadable` ones, are
    named."""
    taken, refused = checked(service, rows)
    refused = dict(sorted({**refused, **unreadable}.items()))
    numbers, ids, answered = list(taken), request_ids(service, taken, at), []
    for first in range(0, len(numbers), PREDICT_ROWS):
        batch = numbers[first : first + PREDICT_ROWS]
        started, values = time.perf_counter(), [taken[row] for row in batch]
        results = service.predict_rows(values)
        # Each row's share of the model call: no HTTP, so below what the service logs.
        latency_ms = (time.perf_counter() - started) * 1000 / len(batch)
        for row, value, result in zip(batch, values, results, strict=True):
            if service.prediction_log is not None:
                log_predictions(service, ids[row], [value], [result], latency_ms, at)
            answered += answers([row], ids[row], [result])
        if service.prediction_log is not None:
            keep_up(service.prediction_log)
    if refused:
        listed = "; ".join(f"file row {row}: {why}" for row, why in list(refused.items())[:5])
        log.error(
            "%d rows the service would refuse, or unreadable, were left out (file rows %s; "
            "%s): %s%s",
            len(refused),
            spans(list(refused)),
            ROW_NUMBERS,
            listed,
            "; ..." if len(refused) > 5 else "",
        )
    return answered


async def predict_file(args: argparse.Namespace) -> list[dict]:
    """Load the bundle as the service does, predict the file, write out the prediction log."""
    service = Service(ServeSettings.from_env(os.environ))
    service.load()
    if service.load_error:
        raise PipelineError(f"the bundle cannot be served: {service.load_error}")
    try:
        features = service.bundle.meta["features"]
        frame = datalib.read_file(args.file, features, "the file to predict (FILE=)")
        rows, unreadable = records(frame, features)
        answered = predict(service, rows, args.at, unreadable)
    finally:
        await service.close()  # every logged record to the database, or to the spool
    if args.out:
        write_answers(args.out, answered, frame, section("data").get("ignore") or [])
        log.info("wrote the request ids of %d rows to %s", len(answered), args.out)
    meta, logged = service.bundle.meta, service.prediction_log
    at = f" at {args.at:%Y-%m-%dT%H:%M:%S} UTC" if args.at else ""
    said = "PREDICTION_LOG=0: not logged"
    if logged is not None:
        counts = logged.counts
        said = f"logged{at}: {counts['logged']} new, a row logged before is not logged again"
        if counts["spool_bytes"]:
            said += (
                f"; records wait in the spool {logged.spool.directory} for the database, "
                "replayed by the next run or the service"
            )
    log.info(
        "%d of %d rows predicted by %s v%s (%s)",
        len(answered),
        len(rows),
        meta["model_name"],
        meta["version"],
        said,
    )
    if len(answered) < len(rows):
        raise PipelineError(f"{len(rows) - len(answered)} rows were left out (named above)")
    return answered


def main(argv: list[str] | None = None) -> int:
    """Predict --file and log it; exit 1 when rows were left out."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--file", required=True, help="a .csv or .parquet path or URL")
    parser.add_argument(
        "--at", type=past_time, help="log the records at this time (ISO, UTC), not now"
    )
    parser.add_argument(
        "--out", type=Path, help="a CSV of each row's request id, prediction and probabilities"
    )
    args = parser.parse_args(argv)
    if not args.file.strip():
        parser.error("--file is empty: name the CSV or Parquet file to predict (FILE= for make)")

    def step() -> int:
        asyncio.run(predict_file(args))
        return 0

    return run(step)


if __name__ == "__main__":
    raise SystemExit(main())
