"""Send the rows of a CSV or Parquet file to a running service's /predict, in batches.

Only the features declared in params.yaml are sent; missing values go as null. Useful to replay
a batch of real traffic against a deployment, and for the demo's drifted traffic. With --out,
writes each row's request_id and record_index (what `make outcomes` joins the actual values on),
its prediction and a classifier's probability of each class. Rows the service refuses as
invalid are left out, named at the end (exit 1); any other refusal stops the run, and the rows
predicted before it are still written.
"""

from __future__ import annotations

import argparse
import json
import logging
import urllib.error
import urllib.request
from pathlib import Path

from {{ cookiecutter.__package_name }} import data as datalib
from {{ cookiecutter.__package_name }}.batches import ROW_NUMBERS, answers, records, spans, write_answers
from {{ cookiecutter.__package_name }}.cli import is_http_url, run
from {{ cookiecutter.__package_name }}.config import section
from {{ cookiecutter.__package_name }}.errors import PipelineError

log = logging.getLogger("send_batch")


class Refused(PipelineError):
    """The service answered a batch with an error status; `records` are the positions in the
    batch its validation errors name."""

    def __init__(self, message: str, status: int = 0, records: frozenset = frozenset()) -> None:
        super().__init__(message)
        self.status, self.records = status, records


def post(url: str, records: list[dict], file_rows: list[int] | None = None) -> dict:
    """POST one batch of records (the file's rows `file_rows`, when given); the service's
    answer."""
    body = json.dumps({"records": records}).encode()
    request = urllib.request.Request(
        f"{url.rstrip('/')}/predict", body, {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as err:
        body = err.read()
        said = f"{url} answered {err.code}: {_detail(body, file_rows)}"
        not_ready = _not_ready(url) if err.code == 503 else ""
        raise Refused(said + not_ready, err.code, _named_records(body)) from err
    except urllib.error.URLError as err:
        message = f"{url} is unreachable: {err.reason}; is `make serve` running?"
        raise PipelineError(message) from err


def _not_ready(url: str) -> str:
    """Why the service says it is not ready, from its /ready answer; empty when it gives none."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/ready", timeout=5):
            return ""  # ready again: it was overloaded, or shutting down
    except urllib.error.HTTPError as err:
        try:
            return f" ({json.loads(err.read())['reason']})"
        except (ValueError, KeyError, TypeError):
            return ""
    except urllib.error.URLError:
        return ""


def _named_records(body: bytes) -> frozenset:
    """The positions of the records a validation error body names (["records", i, field])."""
    try:
        detail = json.loads(body)["detail"]
        return frozenset(
            e["loc"][1] for e in detail if len(e["loc"]) > 1 and isinstance(e["loc"][1], int)
        )
    except (ValueError, KeyError, TypeError, IndexError):
        return frozenset()


def _detail(body: bytes, file_rows: list[int] | None = None) -> str:
    """The service's error detail; validation errors one per line, as "file row n field: why"
    (or "record i field: why", i the position in the request, without `file_rows`)."""
    try:
        detail = json.loads(body)["detail"]
    except (ValueError, KeyError, TypeError):
        return repr(body[:500])
    if not isinstance(detail, list):
        return str(detail)
    lines = []
    for error in detail:
        where = [str(part) for part in error.get("loc", [])[1:]]  # ["records", i, field]
        parts = [_record(where[0], file_rows), *where[1:]] if where else ["the body"]
        lines.append(f"{' '.join(parts)}: {error.get('msg')}")
    return "\n  " + "\n  ".join(lines)


def _record(position: str, file_rows: list[int] | None) -> str:
    """A record of a request by its file row, where known."""
    if file_rows and position.isdigit() and int(position) < len(file_rows):
        return f"file row {file_rows[int(position)]}"
    return f"record {position}"


def send(
    url: str,
    rows: list[dict | None],
    batch_size: int,
    answered: list[dict],
    unreadable: dict[int, str] | None = None,
) -> None:
    """Send rows in batches, appending one answer per row (file row, request id, record index,
    prediction, and a classifier's probability_<class> values) to `answered`.

    A batch refused as invalid (422) is sent again without the records the errors name, until
    the rest is answered, so only those rows are left out (the rest of the batch when a refusal
    names none of it); the run goes on and fails at the end, naming them, with the `unreadable`
    rows (None in `rows`, never sent). Any other refusal (overloaded, not ready, too large)
    stops the run, naming the file rows of the batch.
    """
    left_out = [
        f"file row {row}: {reason} (not sent)" for row, reason in (unreadable or {}).items()
    ]
    for first in range(0, len(rows), batch_size):
        batch = [i for i in range(first, min(first + batch_size, len(rows))) if rows[i] is not None]
        if not batch:
            continue
        sent, answer = batch, None
        while sent and answer is None:
            try:
                answer = post(url, [rows[i] for i in sent], sent)
            except Refused as err:
                _stop_unless_invalid(err, sent, len(answered), len(rows))
                # Records are numbered within what was sent; none named: all of it was refused.
                # A 422 names at most 20 errors, so a batch may take several rounds.
                named = [i for position, i in enumerate(sent) if position in err.records] or sent
                sent = [i for i in sent if i not in set(named)]
                left_out.append(f"file row{'s' * (len(named) > 1)} {spans(named)}: {err}")
        if answer is not None:
            answered.extend(answers(sent, answer["request_id"], answer["predictions"]))
    if left_out:
        refused = len(rows) - len(answered)
        listed = "; ".join(left_out[:5]) + ("; ..." if len(left_out) > 5 else "")
        raise PipelineError(
            f"{refused} of {len(rows)} file rows were refused and left out; the other "
            f"{len(answered)} were predicted and logged. Refused ({ROW_NUMBERS}): {listed}"
        )


def _stop_unless_invalid(err: Refused, batch: list[int], predicted: int, total: int) -> None:
    """Stop the run at a refusal other than invalid input, naming the file rows it held."""
    if err.status != 422:
        raise PipelineError(
            f"file rows {spans(batch)} (records 0-{len(batch) - 1} of that batch) were refused, "
            f"after {predicted} of {total} rows were predicted and logged ({ROW_NUMBERS}); {err}"
        ) from err


def main(argv: list[str] | None = None) -> int:
    """Send --file to --url in --batch-size batches and report how many were predicted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--file", required=True, help="a .csv or .parquet path")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument(
        "--out", type=Path, help="a CSV of each row's request id, prediction and probabilities"
    )
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if not args.file.strip():
        parser.error("--file is empty: name the CSV or Parquet file to send (FILE= for make)")
    if not is_http_url(args.url):
        parser.error(f"--url {args.url!r} is not an http(s) URL, e.g. http://127.0.0.1:8000")

    def step() -> int:
        features = section("data")["features"]
        frame = datalib.read_file(args.file, features, "the batch file (FILE=)")
        others = [str(column) for column in frame.columns if column not in features]
        if others:
            log.info("sending the declared features only, not the file's columns %s", others)
        (rows, unreadable), answered = records(frame, features), []
        if not rows:
            log.warning("%s has no rows: nothing to send", args.file)
        try:
            send(args.url, rows, args.batch_size, answered, unreadable)
        finally:
            if args.out:
                write_answers(args.out, answered, frame, section("data").get("ignore") or [])
                log.info("wrote the request ids of %d rows to %s", len(answered), args.out)
        log.info("%s records predicted by %s", len(answered), args.url)
        return 0

    return run(step)


if __name__ == "__main__":
    raise SystemExit(main())
