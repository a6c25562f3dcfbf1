"""What every script shares: logging, report files, and errors turned into exit codes."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from .config import redact
from .errors import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    PipelineError,
    Terminated,
    first_line,
)

log = logging.getLogger(__name__)


def version_number(text: str) -> str:
    """An argparse type: a registered model version's number (1, 2, ...)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a model version number (1, 2, ...)")
    return str(int(text))


PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def is_http_url(text: str) -> bool:
    """Whether text is an http(s) URL with a host, such as http://127.0.0.1:8000."""
    address = urllib.parse.urlsplit(text)
    return address.scheme in ("http", "https") and bool(address.netloc)


def at_least_one(text: str) -> int:
    """An argparse type: a whole number of at least 1 (rows, users, workers)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def iso_date(text: str) -> str:
    """An argparse type: a date such as 2026-06-30."""
    try:
        date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date such as 2026-06-30") from None
    return text


def positive_days(text: str) -> float:
    """An argparse type: a number of days above zero (a window's length, an age limit)."""
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if not (days > 0 and math.isfinite(days)):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of days above 0, e.g. 1, 0.5")
    return days


def _log_to_stderr() -> None:
    """Log lines to stderr, timed in UTC as every report and registry tag is."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s UTC %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        if handler.formatter is not None:
            handler.formatter.converter = time.gmtime


def _told(err: OSError) -> bool:
    """Log in one line a path the step was given or made that cannot be used (missing, a file
    where a folder should be, read-only): the environment's problem. Some libraries (pyarrow)
    raise these with the path as the message and no filename. A backend's own errors may be
    OSErrors too (botocore's read timeout is one): those name the backend. False for another
    OSError, whose traceback is the useful answer."""
    if check := BACKENDS.get(_library(err)):
        log.error("%s", redact(backend_message(err, check)))
    elif err.filename:
        log.error("cannot use %s: %s", err.filename, err.strerror or err)
    elif isinstance(err, PATH_ERRORS):
        log.error("cannot use %s (%s)", err, type(err).__name__)
    else:
        return False
    return True


def run(step: Callable[[], int]) -> int:
    """Run a script's body: log to stderr, and turn an expected failure into a clear exit code."""
    _log_to_stderr()
    # MLflow logs each database error with its traceback and statement before raising it; the
    # one line this function ends with says what to check. Two lines of it stay.
    logging.getLogger("mlflow.store.db.utils").addFilter(_brief)
    try:
        with _terminate_unwinds():
            return step()
    except KeyboardInterrupt:  # the step's clean-up has run; no traceback of where it was
        log.error("interrupted (Ctrl-C): run the step again to finish it")
        return EXIT_INTERRUPTED
    except Terminated:
        log.error("stopped by SIGTERM: run the step again to finish it")
        return EXIT_TERMINATED
    except PipelineError as err:
        log.error("%s", redact(str(err)))
        return EXIT_ERROR
    except OSError as err:
        if not _told(err):
            raise
        return EXIT_ERROR
    except Exception as err:
        check = BACKENDS.get(_library(err))
        if check is None:
            raise  # a bug: the traceback is the useful answer
        log.debug("backend failure", exc_info=True)
        log.error("%s", redact(backend_message(err, check)))
        return EXIT_ERROR


@contextlib.contextmanager
def _terminate_unwinds():
    """While the step runs, SIGTERM raises Terminated instead of ending the process at once
    with no clean-up (a cancelled workflow job sends it). Only the main thread can set it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _brief(record: logging.LogRecord) -> bool:
    """A logging filter that keeps a record's first two lines, without its traceback."""
    lines = record.getMessage().strip().splitlines()
    record.msg, record.args = " ".join(lines[:2])[:500], ()
    record.exc_info, record.exc_text = None, None
    return True


S3_SETTINGS = (
    "the S3 settings (MODEL_ARTIFACT_ROOT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
    "AWS_ENDPOINT_URL)"
)
# Where a library's exception comes from, and what configures it: a backend that refuses or is
# away is the environment's problem, to be told in one line, not a traceback.
BACKENDS = {
    "sqlalchemy": "the database URLs (MLFLOW_TRACKING_URI, MONITORING_DATABASE_URL, "
    "SOURCE_DATABASE_URL)",
    "psycopg": "the PostgreSQL URLs (MLFLOW_TRACKING_URI, MONITORING_DATABASE_URL)",
    "mlflow": "MLFLOW_TRACKING_URI, MLFLOW_REGISTRY_URI and MODEL_ARTIFACT_ROOT",
    "botocore": S3_SETTINGS,
    "boto3": S3_SETTINGS,
}


def _library(err: BaseException) -> str:
    """The top-level package an exception class comes from."""
    return type(err).__module__.partition(".")[0]


def backend_message(err: Exception, check: str) -> str:
    """One line: the exception's class and first line of text, the backend error underneath it
    when a library wrapped one (MLflow wraps S3's), and what to check."""
    said, cause = first_line(err), err
    while cause.__cause__ or cause.__context__:
        cause = cause.__cause__ or cause.__context__
    if cause is not err and _library(cause) in BACKENDS:
        said += f" (from {first_line(cause)})"
        check = BACKENDS[_library(cause)]
    return f"{said}. Check {check}, and that the service is up"


def read_json(path: Path, produced_by: str) -> dict[str, Any]:
    """Read a report another step wrote, saying which step to run when it is missing."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise PipelineError(
            f"{path} does not exist: run `{produced_by}` first (where it ran, it failed before "
            "writing it: its own message says why)"
        ) from err
    except json.JSONDecodeError as err:
        raise PipelineError(f"{path} is not valid JSON ({err}): run `{produced_by}` again") from err


def write_json(path: Path, report: dict[str, Any]) -> None:
    """Write a report atomically, so a crash never leaves half a file for the next step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps(report, indent=2, default=str) + "\n")
    partial.replace(path)
