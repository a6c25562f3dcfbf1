"""The prediction log: every predicted record, written off the request path, never lost quietly.

The request path only appends to a bounded in-memory queue. One writer thread inserts the
queue in batches, one transaction each, into the `prediction_log` table of the database named
by one URL (SQLite by default, PostgreSQL in production). Inserts are idempotent on
(request_id, record_index), so a batch written twice is stored once.

When the database cannot take a batch, the batch goes to the spool: files of JSON lines in
a folder of `spool_dir` kept for that database (spool_folder), one per batch, written to a
`.tmp` name, fsync'ed and renamed, so a crash leaves either a whole file or a `.tmp` that is
never replayed. Spool files are replayed oldest first, with backoff doubling from
`retry_initial` to `retry_max` seconds while the database is away, and each is deleted only
after its insert commits. They survive restarts. A full queue spills its oldest records to the
spool, at least a batch at a time, so a request never waits for the database; `close()`,
which the service calls on SIGTERM, writes out whatever is still queued.

Records are dropped only when the spool would grow past `spool_cap_bytes` (default
SPOOL_CAP_BYTES, 256 MiB), when a record lacks a field, when the database refuses a record's
data itself (the batch is inserted in halves down to that record, which is written to a
`.rejected` file of its own), or when a spool file cannot be read: that file is kept as
`.rejected`. Rejected files still count against the cap; rename one to `.jsonl` to replay it
after fixing the cause.

Given the serving model's version and training profile, the writer also keeps the rollups
(rollups.py) in the transaction of each insert, adding only the rows that insert actually
added, so a replayed batch never counts twice (write_batch).

`counts` feeds /metrics: `logged` counts records the database stored (a record already there, such
as one another worker replayed first from a shared spool, is not counted again), `spooled`
records written to the spool, `dropped` records lost as above. Each worker process counts its own.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import numbers
import os
import threading
import time
from collections import deque
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from ..config import database_url
from ..errors import PipelineError, driver_said
from .bulk import Bulk
from .rollups import Rollup
from .tables import RECORD_INDEX, REQUEST_ID, create_tables, prediction_log

log = logging.getLogger(__name__)

SPOOL_CAP_BYTES = 256 * 1024 * 1024
SPOOL_SUFFIX = ".jsonl"
TMP_SUFFIX = ".tmp"
REJECTED_SUFFIX = ".rejected"
# A spool write takes milliseconds; a .tmp this old was left by a crash.
STALE_TMP_SECONDS = 300
# How often an outage that goes on is logged again, with how full the spool is.
OUTAGE_REMINDER = 60.0
# Short, so an unreachable PostgreSQL is noticed before the queue fills.
CONNECT_TIMEOUT_SECONDS = 3
INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}
# Compact JSON for the log's JSON columns and spool lines. orjson writes a record's features in a
# sixth of the time json.dumps takes, a good part of the writer's work per record; what it
# refuses (integers past 64 bits, text holding a lone surrogate, keys that are not text) goes to
# the standard encoder. Either way text stays as it is, not \u-escaped: SQLite's JSON paths
# (monitoring's SQL) match a key such as "Größe" only as written, never its escaped form. Values
# JSON cannot hold (datetimes, decimals) are written as their str(), numpy's numbers as numbers,
# and NaN as null.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_SERIALIZE_NUMPY


def _plain(value: Any) -> Any:
    """A value the encoder does not write itself: a float subclass as a float, else its str()."""
    return float(value) if isinstance(value, float) else str(value)


_encode = json.encoder.c_make_encoder(
    None, _plain, json.encoder.encode_basestring, None, ":", ",", False, False, True
)


def _dumps(value: Any) -> str:
    """Compact JSON text."""
    try:
        return orjson.dumps(value, default=_plain, option=_ORJSON_OPTIONS).decode()
    except orjson.JSONEncodeError:
        return "".join(_encode(value, 0))


# What the service logs per predicted record (see prediction_row).
RECORD_FIELDS = (
    "request_id",
    "record_index",
    "logged_at",
    "model_name",
    "model_version",
    "features",
    "prediction",
    "probabilities",
    "latency_ms",
)
COLUMNS = tuple(column.key for column in prediction_log.columns)


def prediction_row(record: dict[str, Any] | tuple) -> tuple:
    """The prediction_log row (a tuple in column order, tables.py) of one logged record.

    A record is a dict with the keys of RECORD_FIELDS (`logged_at` and `probabilities` optional,
    `prediction_value` too: it defaults to a numeric prediction) or, from the service, a tuple
    of all RECORD_FIELDS in that order, which costs the request path less.
    """
    if isinstance(record, tuple):
        request_id, index, logged_at, name, version, features, *outputs = record
        prediction, probabilities, latency = outputs
        value = prediction
        if type(features) is not dict:  # the service's own dict is not copied: nobody keeps it
            features = dict(features)
    else:
        request_id, index = record["request_id"], record["record_index"]
        name, version = record["model_name"], record["model_version"]
        features, prediction = dict(record["features"]), record["prediction"]
        logged_at, probabilities = record.get("logged_at"), record.get("probabilities")
        latency = record["latency_ms"]
        value = record.get("prediction_value", prediction)
    # The str test first: class labels are the common case, and an ABC check is slow.
    numeric = not isinstance(value, str) and isinstance(value, numbers.Real)
    return (
        str(request_id),
        int(index),
        _utc(logged_at or datetime.now(UTC)),
        str(name),
        str(version),
        features,
        str(prediction),
        float(value) if numeric else None,
        probabilities,
        float(latency),
    )


def prediction_rows(records: list) -> tuple[list[tuple], int]:
    """The rows of the well-formed records, and how many records were malformed."""
    rows = []
    for record in records:
        try:
            rows.append(prediction_row(record))
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    return rows, len(records) - len(rows)


def _rollup(model_version: str | None, profile: dict | None) -> Rollup | None:
    """The rollups of the serving model, or None (then `make monitor` reads the raw rows)."""
    if not (profile and model_version):
        return None
    try:
        return Rollup(model_version, profile)
    except (KeyError, TypeError, ValueError) as err:  # a profile this code cannot read
        log.error("prediction log: no rollups, the training profile is unusable: %r", err)
        return None


class _LoggedBefore(Exception):
    """A batch held rows already logged: its transaction is rolled back and done again."""


def write_batch(engine: Engine, insert: Bulk, rows: list[tuple], rollup: Rollup | None) -> int:
    """Insert rows, skipping those already logged, and roll up those inserted, in one transaction.

    `insert` is an INSERT ... ON CONFLICT DO NOTHING into prediction_log. Returns how many
    rows were new. With rollups, a batch whose rows all went in (the row count says so) is rolled
    up as is; otherwise (a replay) the transaction is rolled back and done again with RETURNING,
    so only the rows it adds are counted.
    """
    if rollup is None or not rollup.enabled:
        with engine.begin() as connection:
            return insert(connection, rows)
    with suppress(_LoggedBefore), engine.begin() as connection:
        if insert(connection, rows) != len(rows):
            raise _LoggedBefore  # rolls the transaction back; the insert is redone below
        rollup.add(connection, rows)
        return len(rows)
    key = (prediction_log.c.request_id, prediction_log.c.record_index)
    with engine.begin() as connection:
        returning = insert.statement.returning(*key)
        params = [dict(zip(COLUMNS, row, strict=True)) for row in rows]
        inserted = {tuple(k) for k in connection.execute(returning, params)}
        fresh = []
        for row in rows:
            identity = (row[REQUEST_ID], row[RECORD_INDEX])
            if identity in inserted:
                inserted.discard(identity)  # a key repeated within the batch went in once
                fresh.append(row)
        rollup.add(connection, fresh)
        return len(fresh)


def _utc(moment: datetime | str) -> datetime:
    """A UTC datetime from a datetime or ISO string; naive times are taken as UTC already."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is UTC:
        return moment
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def encode_record(record: dict[str, Any] | tuple) -> bytes:
    """One spool line: a record (dict) or row as a JSON object, datetimes as ISO text; replay
    makes it a row again."""
    if isinstance(record, tuple):  # a row
        record = dict(zip(COLUMNS, record, strict=True))
    # A lone surrogate (valid in a JSON string, never in UTF-8) is written as its \u escape.
    return _dumps(record).encode("utf-8", "backslashreplace") + b"\n"


def prediction_log_engine(url_text: str) -> Engine:
    """An engine for the monitoring database (MONITORING_DATABASE_URL, refused with the reason
    when unusable: config.database_url): short connect timeout, WAL for SQLite."""
    url = database_url(url_text, "MONITORING_DATABASE_URL")
    backend = url.get_backend_name()
    connect_args = {"connect_timeout": CONNECT_TIMEOUT_SECONDS} if backend == "postgresql" else {}
    # hide_parameters: an error's text (logged during an outage) must not carry the features.
    engine = create_engine(
        url,
        pool_pre_ping=True,
        connect_args=connect_args,
        json_serializer=_dumps,
        hide_parameters=True,
    )
    if backend == "sqlite":
        event.listen(engine, "connect", _tune_sqlite)
    return engine


def monitoring_database(url_text: str) -> Engine:
    """The monitoring database for a script, its tables made; one that refuses or does not
    answer is a PipelineError naming it."""
    engine = prediction_log_engine(url_text)
    try:
        create_tables(engine)
    except DBAPIError as err:
        raise database_refused(engine, err) from err
    return engine


def database_refused(engine: Engine, err: DBAPIError) -> PipelineError:
    """One line: which monitoring database failed (password hidden), how, and what to check."""
    return PipelineError(
        f"the monitoring database {engine.url.render_as_string(hide_password=True)} refused or "
        f"did not answer ({driver_said(err)}): check MONITORING_DATABASE_URL and that the "
        "database is up"
    )


def _tune_sqlite(dbapi_connection, _record) -> None:
    """WAL lets readers work during inserts; NORMAL syncs at checkpoints, not every commit."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


# SQLSTATE classes of a refusal of the rows themselves: data exception, integrity constraint
# violation, program limit exceeded (a value too long for an index, which psycopg raises as an
# OperationalError, as it does an outage).
DATA_SQLSTATES = ("22", "23", "54")


def _refuses_data(err: Exception) -> bool:
    """Whether the database refused the rows themselves, so retrying cannot help."""
    if isinstance(err, IntegrityError | DataError):
        return True
    if (getattr(getattr(err, "orig", None), "sqlstate", None) or "")[:2] in DATA_SQLSTATES:
        return True
    # A StatementError that is no DBAPIError failed before reaching the database.
    return isinstance(err, StatementError) and not isinstance(err, DBAPIError)


@dataclass
class Backoff:
    """When to try the database again after it failed: delays doubling up to a maximum."""

    initial: float
    maximum: float
    delay: float = 0.0
    next_try: float = 0.0

    @property
    def failing(self) -> bool:
        """Whether the last attempt failed."""
        return self.delay > 0

    def due(self) -> bool:
        """Whether the next attempt may start now."""
        return time.monotonic() >= self.next_try

    def failed(self) -> None:
        """Wait longer before the next attempt."""
        self.delay = min(self.delay * 2, self.maximum) if self.delay else self.initial
        self.next_try = time.monotonic() + self.delay

    def succeeded(self) -> None:
        """Try again at once from now on."""
        self.delay = self.next_try = 0.0


class Spool:
    """Append-only batch files of logged records, capped in bytes, replayed oldest first."""

    def __init__(self, directory: Path, cap_bytes: int) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        # An existing folder may still refuse writes (read-only mount, another owner): find out
        # now, not in an outage. OSError, as from mkdir.
        probe = self.directory / f".write-probe-{os.getpid()}{TMP_SUFFIX}"
        probe.write_bytes(b"")
        probe.unlink()
        self.cap_bytes = cap_bytes
        self.waiting = threading.Event()  # set while files may wait for replay
        self._lock = threading.Lock()
        self._sequence = itertools.count()
        self.bytes = self._scan()

    def _scan(self) -> int:
        """Bytes an earlier run left; remove the .tmp files a crash left half-written."""
        stale_before = time.time() - STALE_TMP_SECONDS
        for path in self.directory.glob(f"*{TMP_SUFFIX}"):
            with suppress(FileNotFoundError):
                if path.stat().st_mtime < stale_before:
                    path.unlink()
        total = self._size()
        if self.files():
            self.waiting.set()
        return total

    def _size(self) -> int:
        """Bytes the spool folder holds now, in files of every worker sharing it."""
        total = 0
        for path in self.directory.iterdir():
            if path.suffix in (SPOOL_SUFFIX, REJECTED_SUFFIX):
                with suppress(FileNotFoundError):  # another worker replayed it meanwhile
                    total += path.stat().st_size
        return total

    def write(self, records: list[dict[str, Any]], suffix: str = SPOOL_SUFFIX) -> int:
        """Write records as one durable file, as many as fit under the cap; return how many.
        REJECTED_SUFFIX writes records set aside instead, which are not replayed."""
        lines = [encode_record(record) for record in records]
        with self._lock:
            if self.bytes + sum(map(len, lines)) > self.cap_bytes:
                # Other workers sharing the folder may have replayed files since: count again.
                self.bytes = self._size()
            room = self.cap_bytes - self.bytes
            fitting = sum(1 for total in itertools.accumulate(map(len, lines)) if total <= room)
            lines = lines[:fitting]
            size = sum(map(len, lines))
            self.bytes += size
            # Time first: file names sort oldest first.
            name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._sequence):06d}{suffix}"
        if not lines:
            return 0
        try:
            _write_durably(self.directory / name, b"".join(lines))
        except OSError:
            log.exception("could not write spool file %s", self.directory / name)
            with self._lock:
                self.bytes -= size
            return 0
        if suffix == SPOOL_SUFFIX:
            self.waiting.set()
        return len(lines)

    def files(self) -> list[Path]:
        """The spool files waiting for replay, oldest first."""
        return sorted(self.directory.glob(f"*{SPOOL_SUFFIX}"))

    def remove(self, path: Path) -> None:
        """Forget a replayed file."""
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:  # another process sharing the spool replayed it first
            return
        with self._lock:
            self.bytes = max(self.bytes - size, 0)

    def reject(self, path: Path) -> Path:
        """Set aside a file that cannot be replayed; it keeps counting against the cap."""
        try:
            return path.rename(path.with_suffix(REJECTED_SUFFIX))
        except FileNotFoundError:
            return path


DATABASE_FILE = "DATABASE"  # in each database's spool folder: which database it waits for


def spool_folder(spool_dir: Path, engine: Engine) -> Path:
    """The folder under `spool_dir` of one database's spool: named by its backend, host, port
    and database (not the password; a SQLite file by its absolute path). A record spooled while
    one database was away is replayed into that database only, never into another that a later
    service on the machine logs to (a try with a SQLite log of its own, say)."""
    url = engine.url.set(password=None)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        url = url.set(database=str(Path(url.database).resolve()))
    key = hashlib.sha256(url.render_as_string(hide_password=False).encode()).hexdigest()
    return Path(spool_dir) / f"{url.get_backend_name()}-{key[:12]}"


def _name_the_database(folder: Path, engine: Engine) -> None:
    """Write which database a spool folder is for (password hidden), and say which other
    folders beside it hold records waiting for another database."""
    named = folder / DATABASE_FILE
    if not named.exists():
        with suppress(OSError):  # a name for people only: the folder's own name decides
            named.write_text(engine.url.render_as_string(hide_password=True) + "\n")
    for other in sorted(folder.parent.iterdir()):
        waiting = len(list(other.glob(f"*{SPOOL_SUFFIX}"))) if other.is_dir() else 0
        if other != folder and waiting:
            database = "not named"
            with suppress(OSError):
                database = (other / DATABASE_FILE).read_text().strip()
            log.warning(
                "prediction log: %d spool files in %s wait for another database (%s): a service "
                "or make predict logging to it replays them, not this one",
                waiting,
                other,
                database,
            )


def _write_durably(path: Path, data: bytes) -> None:
    """Write, fsync and rename into place, so the file is either whole or absent."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        with tmp.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        tmp.rename(path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # makes the rename itself survive a power cut
    finally:
        os.close(directory)


def _pop(queue: deque, count: int) -> list:
    """Up to `count` items from the left of a deque that other threads may pop too."""
    items = []
    with suppress(IndexError):
        for _ in range(count):
            items.append(queue.popleft())
    return items


class PredictionLog:
    """Log predicted records to the database without ever making a request wait for it."""

    def __init__(
        self,
        database_url: str,
        spool_dir: Path,
        queue_size: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        spool_cap_bytes: int = SPOOL_CAP_BYTES,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        model_version: str | None = None,
        profile: dict | None = None,
    ) -> None:
        self.engine = prediction_log_engine(database_url)
        self.spool = Spool(spool_folder(spool_dir, self.engine), spool_cap_bytes)
        _name_the_database(self.spool.directory, self.engine)
        log.info(
            "prediction log: %s (spooled to %s while it is away)",
            self.engine.url.render_as_string(hide_password=True),
            self.spool.directory,
        )
        self.queue_size, self.batch_size = queue_size, batch_size
        self.flush_interval = flush_interval
        pk = [column.name for column in prediction_log.primary_key]
        insert = INSERTS[self.engine.dialect.name]
        self._insert = Bulk(insert(prediction_log).on_conflict_do_nothing(index_elements=pk))
        # Rollups need the serving model's training profile (it comes with the bundle).
        self.rollup = _rollup(model_version, profile)
        self._queue: deque = deque()
        self._wake = threading.Event()  # set by log() when a batch is ready, and by close()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._counts = {"logged": 0, "spooled": 0, "dropped": 0}
        self._backoff = Backoff(retry_initial, retry_max)
        self._outage_start = self._reminded = 0.0
        self._capped_said = -OUTAGE_REMINDER
        self._tables_ready = False

    @property
    def counts(self) -> dict[str, int]:
        """Records logged, spooled and dropped so far; records queued and spool bytes now."""
        with self._lock:
            counts = dict(self._counts)
        return {**counts, "queued": len(self._queue), "spool_bytes": self.spool.bytes}

    def start(self) -> None:
        """Create the tables if missing and start the writer thread (and spool replay)."""
        if self._thread is not None:
            return
        try:
            self._ensure_tables()
        except Exception as err:
            self._went_down(err)  # the service starts anyway; the writer retries
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def log(self, records: list) -> None:
        """Queue records (see prediction_row) for the writer; a full queue spills its oldest
        records to the spool.

        No lock: deque appends and pops are atomic, and the writer is woken only when a batch
        is ready and it is not awake already, so a request pays a few hundred nanoseconds.
        """
        if self._closing.is_set():
            self._spool(self._rows(records))
            return
        queue = self._queue
        queue.extend(records)
        if len(queue) < self.batch_size:
            return
        if not self._wake.is_set():
            self._wake.set()
        excess = len(queue) - self.queue_size
        if excess > 0:
            # At least a batch per spill: one fsync per batch, not one per request.
            self._spool(self._rows(_pop(queue, max(excess, self.batch_size))))

    def close(self, timeout: float = 10.0) -> None:
        """Flush the queue (to the database, or the spool if it is down) and stop the writer."""
        self._closing.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        left = _pop(self._queue, len(self._queue))
        if left:  # the writer is stuck or never ran: keep the records on disk
            log.warning("prediction log: spooling %d queued records at shutdown", len(left))
            self._spool(self._rows(left))
        if self._thread is None or not self._thread.is_alive():
            self.engine.dispose()

    def _run(self) -> None:
        """Write batches until closed and drained; replay the spool between batches."""
        while True:
            replay_due = self.spool.waiting.is_set() and self._backoff.due()
            batch = self._take(0.0 if replay_due else self.flush_interval)
            if batch:
                self._store(self._rows(batch))
            elif self._closing.is_set():
                return
            if not self._closing.is_set() and self.spool.waiting.is_set() and self._backoff.due():
                self._replay_oldest()

    def _take(self, wait: float) -> list:
        """Up to batch_size queued records, waiting up to `wait` seconds for a full batch."""
        deadline = time.monotonic() + wait
        queue = self._queue
        while len(queue) < self.batch_size and not self._closing.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._wake.clear()
            # log() sets the event after appending: a batch completed since the test above
            # either shows here or sets the event again.
            if len(queue) >= self.batch_size:
                break
            self._wake.wait(remaining)
        return _pop(queue, self.batch_size)

    def _rows(self, records: list) -> list[tuple]:
        """The rows of well-formed records; malformed ones are counted as dropped."""
        rows, malformed = prediction_rows(records)
        if malformed:
            log.error("prediction log: dropped %d malformed records", malformed)
            self._count(dropped=malformed)
        return rows

    def _store(self, rows: list[tuple]) -> None:
        """Insert a batch, or spool it while the database is down."""
        # While down, the replay of the oldest spool file probes the database, not new batches.
        if self._backoff.failing and (self.spool.waiting.is_set() or not self._backoff.due()):
            self._spool(rows)
            return
        try:
            stored = self._insert_isolating(rows)
        except Exception as err:
            self._went_down(err)
            self._spool(rows)
            return
        self._came_up()
        self._count(logged=stored)

    def _replay_oldest(self) -> None:
        """Insert the oldest spool file and delete it once committed."""
        self.spool.waiting.clear()
        files = self.spool.files()
        if not files:  # while down, the next batch probes the database instead
            return
        self.spool.waiting.set()
        records = self._read_spooled(files[0])
        if records is None:
            return
        rows, malformed = prediction_rows(records)
        try:
            stored = self._insert_isolating(rows)
        except Exception as err:
            self._went_down(err)
            return
        self.spool.remove(files[0])
        self._came_up()
        self._count(logged=stored, dropped=malformed)
        if len(files) == 1:  # /metrics' spooled count only grows: the drained spool says so here
            log.info("prediction log: the spool is replayed, nothing waits in it")

    def _read_spooled(self, path: Path) -> list | None:
        """The records of a spool file, or None when it is gone or unreadable."""
        try:
            lines = path.read_bytes().splitlines()
        except FileNotFoundError:  # another process sharing the spool replayed it first
            return None
        except OSError:
            log.exception("prediction log: cannot read spool file %s; retrying later", path)
            self._backoff.failed()
            return None
        try:
            return [json.loads(line) for line in lines if line]
        except ValueError as err:
            self._reject(path, len(lines), err)
            return None

    def write(self, records: list[dict[str, Any]]) -> int:
        """Insert records now, in one transaction, as the writer thread does (for bulk loading).

        Returns how many were new; raises when the database fails (nothing is spooled).
        """
        rows, _malformed = prediction_rows(records)
        return self._insert_rows(rows)

    def _insert_isolating(self, rows: list[tuple]) -> int:
        """Insert rows as _insert_rows does; when the database refuses the data itself (a text
        PostgreSQL cannot store, a category too long for its index), insert halves instead, down
        to the single rows it refuses, which are set aside: one bad record costs no other its
        place in the log. Returns how many rows were new; raises when the database fails."""
        try:
            return self._insert_rows(rows)
        except Exception as err:
            if not _refuses_data(err):
                raise
            if len(rows) == 1:
                self._set_aside(rows, err)
                return 0
        middle = len(rows) // 2
        return self._insert_isolating(rows[:middle]) + self._insert_isolating(rows[middle:])

    def _set_aside(self, rows: list[tuple], err: Exception) -> None:
        """Keep rows the database refuses in a file of their own in the spool folder, never
        replayed, and count them as dropped."""
        self.spool.write(rows, REJECTED_SUFFIX)
        self._count(dropped=len(rows))
        log.error(
            "prediction log: the database refuses record %s #%s (%s); set aside in a %s file of %s",
            rows[0][REQUEST_ID],
            rows[0][RECORD_INDEX],
            str(err).splitlines()[0],
            REJECTED_SUFFIX,
            self.spool.directory,
        )

    def _insert_rows(self, rows: list[tuple]) -> int:
        """Insert rows and their rollups in one transaction; rows already logged are skipped."""
        if not rows:
            return 0
        self._ensure_tables()
        return write_batch(self.engine, self._insert, rows, self.rollup)

    def _ensure_tables(self) -> None:
        """Create the monitoring tables that are missing, once the database answers."""
        if not self._tables_ready:
            create_tables(self.engine)
            self._tables_ready = True

    def _spool(self, rows: list[tuple]) -> None:
        """Keep rows in the spool; count what the cap leaves out as dropped, and say so once per
        OUTAGE_REMINDER seconds (/metrics counts every record)."""
        written = self.spool.write(rows)
        self._count(spooled=written, dropped=len(rows) - written)
        now = time.monotonic()
        if written < len(rows) and now - self._capped_said >= OUTAGE_REMINDER:
            self._capped_said = now
            log.error(
                "prediction log: spool %s is at its cap of %d bytes; dropping records "
                "(prediction_log_dropped_total counts them) until replay frees room",
                self.spool.directory,
                self.spool.cap_bytes,
            )

    def _reject(self, path: Path, records: int, err: Exception) -> None:
        """Set aside a spool file that cannot be replayed, so it does not block the others."""
        kept = self.spool.reject(path)
        self._count(dropped=records)
        log.error(
            "prediction log: cannot replay spool file %s (%s); set aside as %s: rename it "
            "back to %s once fixed to replay it",
            path.name,
            err,
            kept,
            SPOOL_SUFFIX,
        )

    def _went_down(self, err: Exception) -> None:
        """Back off; say so when an outage starts, and again every OUTAGE_REMINDER seconds (a
        wrong URL or password looks like an outage that never ends)."""
        now = time.monotonic()
        if not self._backoff.failing:
            log.warning(
                "prediction log database unavailable, spooling to %s: %s", self.spool.directory, err
            )
            self._outage_start = self._reminded = now
        elif now - self._reminded >= OUTAGE_REMINDER:
            self._reminded = now
            log.error(
                "prediction log database unavailable for %.0f s (check MONITORING_DATABASE_URL): "
                "%s; spool %s holds %d of its %d bytes, past which records are dropped",
                now - self._outage_start,
                err,
                self.spool.directory,
                self.spool.bytes,
                self.spool.cap_bytes,
            )
        self._backoff.failed()

    def _came_up(self) -> None:
        """Resume direct inserts; say so when an outage ends."""
        if self._backoff.failing:
            log.info("prediction log database is back; replaying the spool")
        self._backoff.succeeded()

    def _count(self, **deltas: int) -> None:
        """Add to the counters /metrics reports."""
        with self._lock:
            for name, delta in deltas.items():
                self._counts[name] += delta
