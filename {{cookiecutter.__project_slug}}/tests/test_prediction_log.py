"""The prediction log: every field stored, idempotent, spooled through outages, never blocking.

The PostgreSQL test starts a throwaway server with initdb/pg_ctl and is skipped, with the
reason, where they are not installed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import random
import re
import shutil
import socket
import string
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from {{ cookiecutter.__package_name }}.config import Backends, redact
from {{ cookiecutter.__package_name }}.errors import PipelineError
from {{ cookiecutter.__package_name }}.monitoring import PredictionLog, bulk, tables
from {{ cookiecutter.__package_name }}.monitoring import prediction_log as writer_module
from {{ cookiecutter.__package_name }}.monitoring.prediction_log import (
    COLUMNS,
    RECORD_FIELDS,
    Spool,
    encode_record,
    prediction_log_engine,
    prediction_row,
    spool_folder,
)
from {{ cookiecutter.__package_name }}.monitoring.tables import prediction_log

LOGGED_AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
# Fast retries so an outage test ends in seconds.
QUICK = {"flush_interval": 0.05, "retry_initial": 0.05, "retry_max": 0.2}


def request(request_id: str, count: int = 3) -> list[dict]:
    """The log records of one classification request of `count` records."""
    return [
        {
            "request_id": request_id,
            "record_index": index,
            "logged_at": LOGGED_AT,
            "model_name": "churn",
            "model_version": "7",
            "features": {"tenure": 12.0 + index, "plan": "basic"},
            "prediction": "yes",
            "probabilities": {"no": 0.25, "yes": 0.75},
            "latency_ms": 4.5,
        }
        for index in range(count)
    ]


def requests(first: int, last: int, count: int = 3) -> list[dict]:
    """The records of requests req-<first> to req-<last - 1>, ids all the same length."""
    return [record for n in range(first, last) for record in request(f"req-{n:04d}", count)]


def sqlite_row(record: dict) -> dict:
    """The row SQLite gives back for a test record: naive UTC time, prediction as text and value."""
    prediction = record["prediction"]
    numeric = isinstance(prediction, float)
    return {
        **record,
        "logged_at": record["logged_at"].replace(tzinfo=None),
        "prediction": str(prediction),
        "prediction_value": prediction if numeric else None,
    }


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll until `condition` holds; fail naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def stored(url: str) -> list[dict]:
    """Every row of the prediction log, in key order."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            query = sa.select(prediction_log).order_by(
                prediction_log.c.request_id, prediction_log.c.record_index
            )
            return [row._asdict() for row in connection.execute(query)]
    finally:
        engine.dispose()


def spool_files(spool: Path, pattern: str = "*.jsonl") -> list[Path]:
    """The spool's files matching `pattern`, in the folders of every database."""
    return sorted(spool.glob(f"*/{pattern}"))


def database_spool(spool: Path, url: str) -> Path:
    """The folder of `spool` that holds one database's records, made."""
    folder = spool_folder(spool, prediction_log_engine(url))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite prediction log in a file."""
    return f"sqlite:///{tmp_path / 'prediction_log.db'}"


def test_prediction_log_stores_every_field(sqlite_url: str, tmp_path: Path) -> None:
    classified = request("req-a", count=1)[0]
    regressed = {**classified, "request_id": "req-b", "prediction": 42.5, "probabilities": None}
    regressed["logged_at"] = "2024-05-01T14:30:00+02:00"  # ISO text, not UTC
    plog = PredictionLog(sqlite_url, tmp_path / "spool", **QUICK)
    plog.start()
    plog.log([classified, regressed])
    plog.close()

    rows = stored(sqlite_url)
    assert rows[0] == {
        "request_id": "req-a",
        "record_index": 0,
        "model_name": "churn",
        "model_version": "7",
        # SQLite keeps no time zone: the log stores UTC.
        "logged_at": datetime(2024, 5, 1, 12, 0),
        "features": {"tenure": 12.0, "plan": "basic"},
        "prediction": "yes",
        "prediction_value": None,
        "probabilities": {"no": 0.25, "yes": 0.75},
        "latency_ms": 4.5,
    }
    assert (rows[1]["prediction"], rows[1]["prediction_value"]) == ("42.5", 42.5)
    assert rows[1]["logged_at"] == datetime(2024, 5, 1, 12, 30), "not converted to UTC"
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as connection:
        nulls = "SELECT count(*) FROM prediction_log WHERE probabilities IS NULL"
        assert connection.execute(sa.text(nulls)).scalar() == 1, "None stored as JSON 'null'"
        assert connection.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
    engine.dispose()
    assert plog.counts == {"logged": 2, "spooled": 0, "dropped": 0, "queued": 0, "spool_bytes": 0}


def test_prediction_log_same_request_twice_stores_once(sqlite_url: str, tmp_path: Path) -> None:
    plog = PredictionLog(sqlite_url, tmp_path / "spool", **QUICK)
    plog.start()
    plog.log(request("req-same"))
    wait_for(lambda: plog.counts["logged"] == 3, "the first copy")
    plog.log(request("req-same"))
    plog.close()

    rows = stored(sqlite_url)
    assert [(row["request_id"], row["record_index"]) for row in rows] == [
        ("req-same", 0),
        ("req-same", 1),
        ("req-same", 2),
    ]
    assert plog.counts["logged"] == 3, "the second copy stored nothing, and counts nothing"


def test_prediction_log_sqlite_outage_spools_then_replays(tmp_path: Path, caplog) -> None:
    # The database's folder does not exist yet: SQLite cannot open it until it does.
    folder, spool = tmp_path / "not-yet", tmp_path / "spool"
    url = f"sqlite:///{folder / 'prediction_log.db'}"
    plog = PredictionLog(url, spool, **QUICK)
    plog.start()
    # Numeric predictions: the value must survive the spool as a number.
    records = [{**record, "prediction": 0.5, "probabilities": None} for record in requests(0, 10)]
    plog.log(records)
    wait_for(lambda: plog.counts["spooled"] == 30, "30 spooled records")
    assert spool_files(spool), "no spool file written during the outage"
    assert plog.counts["logged"] == 0

    caplog.set_level(logging.INFO)
    folder.mkdir()
    wait_for(lambda: plog.counts["logged"] == 30, "the spool replayed")
    plog.close()
    assert "the spool is replayed, nothing waits in it" in caplog.text

    rows = stored(url)
    assert len({row["request_id"] for row in rows}) == 10
    assert rows == [sqlite_row(record) for record in records], "a field changed in the spool"
    assert spool_files(spool) == [], "a replayed spool file was not deleted"
    assert plog.counts == {"logged": 30, "spooled": 30, "dropped": 0, "queued": 0, "spool_bytes": 0}


def test_records_spooled_for_one_database_are_replayed_into_it_not_another(
    tmp_path: Path, caplog
) -> None:
    """Services on one machine share the default spool folder: a try with a SQLite log of its
    own must not replay the records a production service spooled while its database was away."""
    away, other, spool = tmp_path / "away", tmp_path / "other.db", tmp_path / "spool"
    production = f"sqlite:///{away / 'log.db'}"  # its folder missing: the database is away
    down = PredictionLog(production, spool, **QUICK)
    down.log(requests(0, 4))
    down.close()  # never started: close() spools the queue
    assert len(spool_files(spool)) == 1
    caplog.set_level(logging.INFO)
    trying = PredictionLog(f"sqlite:///{other}", spool, **QUICK)
    trying.start()
    trying.log(requests(10, 11))
    wait_for(lambda: trying.counts["logged"] == 3, "the try's own records")
    trying.close()
    assert len(stored(f"sqlite:///{other}")) == 3 and len(spool_files(spool)) == 1
    said = f"1 spool files in {spool_folder(spool, down.engine)} wait for another database ("
    assert said in caplog.text and f"{away / 'log.db'}): a service" in caplog.text
    assert f"prediction log: sqlite:///{other} (spooled to {spool}/sqlite-" in caplog.text
    away.mkdir()  # the database is back: its own service replays them
    back = PredictionLog(production, spool, **QUICK)
    back.start()
    wait_for(lambda: back.counts["logged"] == 12, "the spooled records replayed")
    back.close()
    assert len(stored(production)) == 12 and spool_files(spool) == []


def test_an_outage_that_goes_on_is_logged_again_naming_the_url_to_check(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    monkeypatch.setattr(writer_module, "OUTAGE_REMINDER", 0.3)
    url = f"sqlite:///{tmp_path / 'no-such-folder' / 'prediction_log.db'}"  # a wrong URL
    plog = PredictionLog(url, tmp_path / "spool", **QUICK)
    plog.start()
    for first in range(0, 40, 2):
        plog.log(requests(first, first + 2))
        time.sleep(0.05)
    wait_for(lambda: "unavailable for" in caplog.text, "a reminder")
    plog.close()
    assert "check MONITORING_DATABASE_URL" in caplog.text and "bytes, past which" in caplog.text


def test_prediction_log_spool_cap_drops_past_cap(tmp_path: Path) -> None:
    # The writer spools the rows it failed to insert.
    record_bytes = len(encode_record(prediction_row(request("req-0000")[0])))
    cap = 10 * record_bytes + record_bytes // 2  # room for 10 records, not 11
    url = f"sqlite:///{tmp_path / 'missing' / 'prediction_log.db'}"
    plog = PredictionLog(url, tmp_path / "spool", spool_cap_bytes=cap, batch_size=4, **QUICK)
    plog.start()
    plog.log(requests(0, 5, count=5))  # 25 records, all the same size
    wait_for(lambda: plog.counts["spooled"] + plog.counts["dropped"] == 25, "25 records handled")
    plog.close()

    counts = plog.counts
    assert (counts["spooled"], counts["dropped"]) == (10, 15)
    assert counts["spool_bytes"] == 10 * record_bytes
    assert sum(path.stat().st_size for path in spool_files(tmp_path / "spool")) == 10 * record_bytes


def test_spool_cap_counts_the_files_another_worker_replayed(tmp_path: Path) -> None:
    """Workers share the spool folder: room that another one's replay freed is room."""
    rows = [prediction_row(record) for record in requests(0, 10, count=1)]
    cap = len(encode_record(rows[0])) * 5 + 1
    mine, theirs = Spool(tmp_path, cap), Spool(tmp_path, cap)
    assert mine.write(rows[:5]) == 5 and mine.write(rows[5:6]) == 0, "the cap holds"
    for path in theirs.files():  # the other worker replays them
        theirs.remove(path)
    assert mine.write(rows[5:10]) == 5
    assert mine.bytes == sum(path.stat().st_size for path in mine.files())


def test_outage_messages_carry_no_feature_values(tmp_path: Path, caplog) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    plog = PredictionLog(url, tmp_path / "spool", batch_size=2, **QUICK)
    plog.start()
    plog.log(requests(0, 1, count=2))
    wait_for(lambda: plog.counts["logged"] == 2, "the first records logged")
    locker = sa.create_engine(url).connect()  # holds the write lock: inserts fail
    locker.exec_driver_sql("BEGIN EXCLUSIVE")
    try:
        plog.log(requests(1, 2, count=2))
        wait_for(lambda: plog.counts["spooled"] == 2, "records spooled while locked")
    finally:
        locker.rollback()
        locker.close()
    plog.close()
    assert "unavailable" in caplog.text
    assert "tenure" not in caplog.text and "basic" not in caplog.text


def test_prediction_log_full_queue_spills_without_blocking(sqlite_url: str, tmp_path: Path) -> None:
    # Never started, so nothing drains the queue: everything past its bound must spill.
    plog = PredictionLog(sqlite_url, tmp_path / "spool", queue_size=1_000, batch_size=500)
    records = requests(0, 100_000, count=1)
    started = time.perf_counter()
    for first in range(0, len(records), 1_000):  # one call per 1,000-record request
        plog.log(records[first : first + 1_000])
    wall = time.perf_counter() - started

    # A bound that only catches waiting on a database (it would take minutes), not a timing goal.
    assert wall < 30, f"log() took {wall:.1f} s for 100,000 records: it must never wait"
    counts = plog.counts
    assert (counts["queued"], counts["spooled"], counts["dropped"]) == (1_000, 99_000, 0)
    assert len(spool_files(tmp_path / "spool")) == 99, "not one fsync'ed file per spill"
    plog.close()
    assert plog.counts["spooled"] == 100_000, "close() left queued records behind"


def test_prediction_log_close_flushes_queue(sqlite_url: str, tmp_path: Path) -> None:
    # A batch size and interval this large mean only close() can write these records.
    plog = PredictionLog(sqlite_url, tmp_path / "spool", batch_size=10_000, flush_interval=30)
    plog.start()
    plog.log(requests(0, 50, count=5))
    started = time.perf_counter()
    plog.close()

    assert time.perf_counter() - started < 5.0, "close() waited for the flush interval"
    assert len(stored(sqlite_url)) == 250
    assert plog.counts == {"logged": 250, "spooled": 0, "dropped": 0, "queued": 0, "spool_bytes": 0}


def test_prediction_log_restart_replays_leftover_spool(sqlite_url: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    crashed = PredictionLog(sqlite_url, spool)  # never started: close() spools the queue
    crashed.log(requests(0, 10))
    crashed.close()
    assert len(spool_files(spool)) == 1
    # Writes a crash interrupted: a fresh one is left alone, an hour-old one removed.
    folder = database_spool(spool, sqlite_url)
    fresh, stale = folder / "9-fresh.jsonl.tmp", folder / "8-stale.jsonl.tmp"
    for partial in (fresh, stale):
        partial.write_text('{"request_id": "req-partial", "record_in')
    os.utime(stale, (time.time() - 3600, time.time() - 3600))

    plog = PredictionLog(sqlite_url, spool, **QUICK)
    plog.start()
    wait_for(lambda: plog.counts["logged"] == 30, "the leftover spool replayed")
    plog.close()

    assert stored(sqlite_url) == [sqlite_row(record) for record in requests(0, 10)]
    assert (fresh.exists(), stale.exists()) == (True, False)
    assert spool_files(spool) == []
    assert plog.counts == {"logged": 30, "spooled": 0, "dropped": 0, "queued": 0, "spool_bytes": 0}


def test_prediction_log_unreadable_spool_file_is_set_aside(sqlite_url: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    folder = database_spool(spool, sqlite_url)
    (folder / "1-corrupt.jsonl").write_text("not json\nnot json either\n")
    (folder / "2-good.jsonl").write_bytes(b"".join(map(encode_record, request("ok"))))
    plog = PredictionLog(sqlite_url, spool, **QUICK)
    plog.start()
    wait_for(lambda: plog.counts["logged"] == 3, "the good file replayed past the corrupt one")
    plog.close()

    assert [path.name for path in spool_files(spool, "*.rejected")] == ["1-corrupt.rejected"]
    assert (plog.counts["dropped"], len(stored(sqlite_url))) == (2, 3)


def test_prediction_log_malformed_record_dropped_and_counted(
    sqlite_url: str, tmp_path: Path
) -> None:
    good, malformed = request("req-good", count=2), request("req-bad", count=1)[0]
    del malformed["features"]
    plog = PredictionLog(sqlite_url, tmp_path / "spool", **QUICK)
    plog.start()
    plog.log([*good, malformed])
    plog.close()

    assert [row["request_id"] for row in stored(sqlite_url)] == ["req-good", "req-good"]
    assert (plog.counts["logged"], plog.counts["dropped"]) == (2, 1)


def test_prediction_log_takes_the_services_tuples_as_it_takes_dicts(
    tmp_path: Path,
) -> None:
    """The service logs each record as a tuple of RECORD_FIELDS: stored exactly as the dict."""
    records = request("req-d", count=2)
    records[1]["logged_at"] = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    as_tuples = [
        tuple(record[field] for field in RECORD_FIELDS)
        for record in ({**r, "request_id": "req-t"} for r in records)
    ]
    urls = {}
    for name, batch in (("dicts", records), ("tuples", [*as_tuples, ("req-short", 0)])):
        urls[name] = f"sqlite:///{tmp_path / name}.db"
        plog = PredictionLog(urls[name], tmp_path / f"spool-{name}", **QUICK)
        plog.start()
        plog.log(batch)
        plog.close()

    from_dicts, from_tuples = stored(urls["dicts"]), stored(urls["tuples"])
    assert from_tuples == [{**row, "request_id": "req-t"} for row in from_dicts]
    assert from_tuples[1]["logged_at"] == datetime(2024, 5, 1, 12, 0, 0, 123456)
    assert plog.counts["dropped"] == 1, "a tuple of the wrong length is malformed"


def test_row_positions_follow_the_table() -> None:
    positions = {
        name.lower(): getattr(tables, name)
        for name in dir(tables)
        if name.isupper() and isinstance(getattr(tables, name), int)
    }
    assert sorted(positions, key=positions.get) == list(COLUMNS)
    assert list(COLUMNS) == [column.key for column in prediction_log.columns]


def test_bulk_refuses_rows_of_the_wrong_width(sqlite_url: str) -> None:
    engine = prediction_log_engine(sqlite_url)
    tables.metadata.create_all(engine)
    writer = bulk.Bulk(sa.insert(prediction_log))
    with pytest.raises(ValueError, match="prediction_log need 10 values"), engine.begin() as conn:
        writer(conn, [prediction_row(request("req-w", count=1)[0])[:9]])
    engine.dispose()


@pytest.mark.parametrize(
    "moment",
    [
        LOGGED_AT,
        datetime(2026, 11, 26, 23, 5, 11, 414844, tzinfo=UTC),
        datetime(2024, 5, 1, 12, 0, 0, 7),  # naive: taken as UTC already
        datetime(999, 12, 31, 23, 59, 59),
    ],
)
def test_bulk_writes_sqlite_times_as_sqlalchemy_does(moment: datetime) -> None:
    dialect = sa.create_engine("sqlite://").dialect
    column = prediction_log.c.logged_at.type
    expected = column.dialect_impl(dialect).bind_processor(dialect)(moment)
    assert bulk._processor(column, dialect)(moment) == expected
    with pytest.raises(TypeError, match="datetime"):
        bulk._processor(column, dialect)("2024-05-01 12:00:00")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"Größe": "süß", "plan": None}, '{"Größe":"süß","plan":null}'),  # not \u-escaped
        ({"n": np.int64(3), "x": np.float32(0.5), "y": np.float64(2)}, '{"n":3,"x":0.5,"y":2.0}'),
        ({"gap": float("nan"), "far": float("inf")}, '{"gap":null,"far":null}'),
        ({"at": LOGGED_AT}, '{"at":"2024-05-01 12:00:00+00:00"}'),
        # What orjson refuses goes through the standard encoder, as it stands.
        ({"big": 2**70}, '{"big":1180591620717411303424}'),
        ({1: "a", None: "b"}, '{"1":"a","null":"b"}'),
        ({"odd": "\ud800"}, '{"odd":"\ud800"}'),
    ],
)
def test_the_logs_json_keeps_text_as_written_and_numbers_as_numbers(value, text) -> None:
    assert writer_module._dumps(value) == text


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("mysql://user@localhost/log", "names a 'mysql' database: this project ships the drivers"),
        ("postgres://user:s3cret@localhost/log", "starts with postgres://: SQLAlchemy reads"),
        ("postgresql://user:p@ss:w#rd@localhost:5432/log", "percent-encoded (@ as %40"),
        ("postgresql://user:p@ss@localhost/log", "percent-encoded (@ as %40"),
    ],
)
def test_prediction_log_refuses_a_url_it_cannot_use_naming_the_fix(url, said, tmp_path) -> None:
    with pytest.raises(PipelineError, match=r"^MONITORING_DATABASE_URL ") as refused:
        PredictionLog(url, tmp_path / "spool")
    assert said in str(refused.value)
    assert not {"s3cret", "ss", "rd"} & set(re.split(r"\W+", str(refused.value)))


def test_a_monitoring_database_that_refuses_is_named_once_without_its_password(tmp_path):
    """What `make monitor` and `make outcomes` say when MONITORING_DATABASE_URL is wrong."""
    with pytest.raises(PipelineError) as refused:
        writer_module.monitoring_database("postgresql://mlops:s3cret@127.0.0.1:9/log")
    said = str(refused.value)
    assert said.startswith("the monitoring database postgresql+psycopg://mlops:***@127.0.0.1:9/log")
    assert "OperationalError: connection failed" in said and "s3cret" not in said
    assert said.endswith("check MONITORING_DATABASE_URL and that the database is up")
    engine = writer_module.monitoring_database(f"sqlite:///{tmp_path / 'monitoring.db'}")
    assert set(tables.metadata.tables) <= set(sa.inspect(engine).get_table_names())


def test_redact_hides_whole_passwords_even_unencoded():
    line = "postgresql+psycopg://mlops:p@ss:w/rd@127.0.0.1:5432/db is down; s3://bucket/key stays"
    assert redact(line) == "postgresql+psycopg://mlops:***@127.0.0.1:5432/db is down; " + (
        "s3://bucket/key stays"
    )
    assert redact("sqlite:///monitoring.db") == "sqlite:///monitoring.db"
    given = "postgresql://mon@127.0.0.1/db?sslmode=require&Password=s3cr3t&connect_timeout=3 down"
    assert redact(given) == (
        "postgresql://mon@127.0.0.1/db?sslmode=require&Password=***&connect_timeout=3 down"
    )


def test_a_registry_id_is_of_its_uri_without_the_password():
    """reports/train.json keeps it: teammates' passwords differ, and a hash of one is no secret
    a committed file should hold."""
    uri = "postgresql+psycopg://mlops:{}@127.0.0.1:5432/mlflow"
    ids = {Backends.from_env({"MLFLOW_TRACKING_URI": uri.format(p)}).registry_id() for p in "ab"}
    (same,) = ids
    other = Backends.from_env({"MLFLOW_TRACKING_URI": uri.format("a").replace("5432", "5433")})
    assert other.registry_id() != same and len(same) == 12


# --------------------------------------------------------------------------- PostgreSQL


def postgres_bindir() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    initdb = shutil.which("initdb")
    if initdb and (Path(initdb).resolve().parent / "pg_ctl").exists():
        return Path(initdb).resolve().parent
    found = [
        path for path in Path("/usr/lib/postgresql").glob("*/bin") if (path / "pg_ctl").exists()
    ]
    return max(found, key=lambda path: int(path.parent.name.split(".")[0]), default=None)


def unprivileged_user() -> str | None:
    """The account to run PostgreSQL as when the tests run as root (it refuses root)."""
    for name in ("pgtest", "postgres", "nobody"):
        try:
            return pwd.getpwnam(name).pw_name
        except KeyError:
            continue
    return None


class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1 that a test can stop and start again."""

    def __init__(self, bindir: Path, root: Path, user: str | None) -> None:
        self.bindir, self.root, self.data = bindir, root, root / "data"
        self.prefix = ["runuser", "-u", user, "--"] if user else []
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def run(self, program: str, *args: str) -> None:
        """Run a PostgreSQL program as the cluster's owner."""
        command = [*self.prefix, str(self.bindir / program), *args]
        subprocess.run(command, check=True, capture_output=True, cwd=self.root, timeout=60)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-o",
            options,
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server, closing its connections."""
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    """A running throwaway PostgreSQL; skipped where its server programs are missing."""
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server programs (initdb, pg_ctl) not on PATH nor in /usr/lib/postgresql"
        )
    user = unprivileged_user() if os.geteuid() == 0 else None
    if os.geteuid() == 0 and (user is None or shutil.which("runuser") is None):
        pytest.skip("running as root without runuser and an unprivileged account for PostgreSQL")
    root = Path(tempfile.mkdtemp(prefix="prediction-log-pg-"))
    if user:
        shutil.chown(root, user)
    server = Postgres(bindir, root, user)
    try:
        server.run("initdb", "-D", str(server.data), "-U", "postgres", "--auth=trust", "--no-sync")
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # stopped, or never started
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def test_prediction_log_postgres_outage_spools_then_replays(
    postgres: Postgres, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    plog = PredictionLog(postgres.url, spool, **QUICK)
    plog.start()
    plog.log(requests(0, 5))
    wait_for(lambda: plog.counts["logged"] == 15, "15 records logged before the outage")

    postgres.stop()
    plog.log(requests(5, 15))
    wait_for(lambda: plog.counts["spooled"] == 30, "30 records spooled during the outage")
    assert spool_files(spool), "no spool file written during the outage"

    postgres.start()
    wait_for(lambda: plog.counts["logged"] == 45, "the spool replayed", timeout=30)
    plog.log(request("req-0000"))  # again: must not duplicate
    plog.close()

    rows = stored(postgres.url)
    assert (len({row["request_id"] for row in rows}), len(rows)) == (15, 45)
    assert rows[0]["logged_at"] == LOGGED_AT, "PostgreSQL keeps the time zone"
    assert spool_files(spool) == []
    # The repeated request stored nothing, so it is not counted as logged.
    assert plog.counts == {"logged": 45, "spooled": 30, "dropped": 0, "queued": 0, "spool_bytes": 0}


# A serving model's training profile, enough for the writer's rollups.
PROFILE = {
    "features": {
        "tenure": {"kind": "numeric", "bin_edges": [0.0, 10.0, 20.0, 30.0]},
        "plan": {"kind": "categorical"},
    },
    "prediction": {"kind": "categorical"},
}


def test_services_starting_at_once_on_an_empty_postgresql_all_create_the_tables(postgres):
    """Each loser of the race to CREATE a table fails once the winner commits (a duplicate
    type): that is no outage, the tables are there."""
    engines = [sa.create_engine(postgres.url) for _ in range(6)]
    start = threading.Barrier(len(engines))

    def create(engine):
        start.wait()
        tables.create_tables(engine)

    with ThreadPoolExecutor(len(engines)) as pool:
        list(pool.map(create, engines))
    assert set(tables.metadata.tables) <= set(sa.inspect(engines[0]).get_table_names())


def test_records_the_database_refuses_are_set_aside_alone(
    postgres: Postgres, tmp_path: Path, caplog
) -> None:
    """PostgreSQL refuses a NUL in text and a category too long for its rollup index (an error
    psycopg raises as an OperationalError, as for an outage): the batch goes in by halves down
    to those two records, and every other record of it is logged, none retried for ever."""
    spool = tmp_path / "spool"
    plog = PredictionLog(postgres.url, spool, model_version="7", profile=PROFILE, **QUICK)
    plog.start()
    records = requests(0, 100)
    noise = "".join(random.Random(5).choices(string.ascii_letters, k=8000))  # incompressible
    for position, plan in ((10, "ba\x00sic"), (200, noise)):
        records[position]["features"] = {**records[position]["features"], "plan": plan}
    plog.log(records)
    wait_for(lambda: sum(plog.counts[n] for n in ("logged", "dropped")) == 300, "all 300 in")
    plog.close()

    assert (plog.counts["logged"], plog.counts["dropped"]) == (298, 2)
    assert len(stored(postgres.url)) == 298
    rejected = [
        json.loads(line)
        for path in spool_files(spool, "*.rejected")
        for line in path.read_text().splitlines()
    ]
    refused = sorted((record["request_id"], record["record_index"]) for record in rejected)
    assert refused == [("req-0003", 1), ("req-0066", 2)]
    assert spool_files(spool) == [], "nothing waits for replay: the database never went away"
    assert "unavailable" not in caplog.text
