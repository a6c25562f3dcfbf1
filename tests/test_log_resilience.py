"""The prediction log under failure, at the service level, on PostgreSQL and on SQLite.

The baked repo's `scripts/serve.py` runs, as deployed, in the repo's own environment on a
champion bundle exported from its registry, while threads here send it steady /predict traffic.
The database is taken away for real: PostgreSQL stopped with `pg_ctl -m fast` and started again
on the same port and data, SQLite write-locked by another connection holding `BEGIN EXCLUSIVE`
(the writer waits out its busy timeout, then fails). What is counted at the end is the
prediction_log table itself, against the request ids of the 200 answers.

- a 30-second outage under load loses no record, spools visibly (/metrics) and never fails a
  request;
- `kill -9` while the spool is being replayed, then a restart, duplicates nothing and loses
  nothing (the spool is on disk); `kill -9` under load loses only the records still in memory,
  the bound the generated README documents;
- a capped spool drops exactly what does not fit, counts it on /metrics, and is emptied by replay.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import services
import sqlalchemy as sa
from conftest import make, project_env

pytestmark = [pytest.mark.services, pytest.mark.lifecycle]

OUTAGE_SECONDS = 30
RATE = 100  # requests per second, of 1 to 3 records each (200 records per second)
LOAD_THREADS = 8
READY_TIMEOUT = 120
# The generated README's loss bound for a kill -9, per worker: the in-memory queue, the batch
# the writer holds and the request being queued (PredictionLog and SERVE_MAX_RECORDS defaults).
QUEUE_SIZE, BATCH_SIZE, MAX_RECORDS = 10_000, 500, 1_000
KILL_LOSS_BOUND = QUEUE_SIZE + BATCH_SIZE + MAX_RECORDS
# With the database up, a record is in it this long after its answer at most (it takes
# 0.2 s, the flush interval, plus an insert; the rest is room for a busy CI runner).
WRITE_LAG_SECONDS = 3


# --------------------------------------------------------------------------- the service


@pytest.fixture(scope="module")
def served(bake, set_up, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The baked repo (with its .venv) and a copy of its champion bundle.

    The lifecycle tests leave one in build/model; run alone, this trains one in a copy of the
    pristine bake sharing the .venv, so the shared repo's registry stays as they expect it.
    """
    project = set_up("baseline")
    bundle = tmp_path_factory.mktemp("champion") / "model"
    built = project / "build" / "model"
    if not (built / "bundle.json").exists():
        work = tmp_path_factory.mktemp("pipeline") / project.name
        shutil.copytree(bake("baseline"), work, symlinks=True)
        (work / ".venv").symlink_to(project / ".venv")
        make(work, "pipeline", "bundle")
        built = work / "build" / "model"
    shutil.copytree(built, bundle)
    return project, bundle


class Service:
    """`scripts/serve.py` with one worker, as `make serve` and the image run it; restartable."""

    def __init__(self, project: Path, bundle: Path, folder: Path, database_url: str, **env):
        self.project, self.spool = project, folder / "spool"
        self.log_path = folder / "serve.log"
        self.env = {
            **project_env(project),
            "MODEL_BUNDLE_DIR": str(bundle),
            "MONITORING_DATABASE_URL": database_url,
            "PREDICTION_LOG_SPOOL_DIR": str(self.spool),
            **env,
        }
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> Service:
        """Start the process on a free port; return once /ready answers 200."""
        port = services.free_port()
        command = [str(self.project / ".venv/bin/python"), "scripts/serve.py", "--port", str(port)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.project,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.url = f"http://127.0.0.1:{port}"
        try:
            services.wait_until(
                lambda: services.http_status(f"{self.url}/ready", self.process) == 200,
                READY_TIMEOUT,
                "the service's /ready",
            )
        except (TimeoutError, RuntimeError) as err:
            pytest.fail(f"{err}\n--- serve.log ---\n{services.log_tail(self.log_path)}")
        return self

    def terminate(self) -> int:
        """SIGTERM, as a deploy or `docker stop` sends it; the exit status."""
        os.killpg(self.process.pid, signal.SIGTERM)
        return self.process.wait(timeout=60)

    def kill(self) -> None:
        """SIGKILL the process (and any it started): no handler, no flush."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """Kill the process if a test left it running."""
        if self.process is not None and self.process.poll() is None:
            services.stop_process(self.process)

    def counters(self) -> dict[str, int]:
        """The prediction log's counters on /metrics: logged, spooled and dropped."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
            text = response.read().decode()
        found = re.findall(r"^prediction_log_(\w+)_total (\S+)$", text, re.MULTILINE)
        return {name: int(float(value)) for name, value in found}

    def spool_files(self, suffix: str = ".jsonl") -> list[Path]:
        """The spool's files ending with `suffix`."""
        return sorted(self.spool.glob(f"*/*{suffix}"))  # a folder per database

    @property
    def log(self) -> str:
        """Everything the service printed, over all its starts."""
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def service(served, tmp_path: Path):
    """`service(database_url, **env)`: a Service for this test, killed at the end if left up."""
    made: list[Service] = []

    def _service(database_url: str, **env: str) -> Service:
        made.append(Service(*served, tmp_path, database_url, **env))
        return made[-1]

    yield _service
    for each in made:
        each.stop()


# --------------------------------------------------------------------------- the traffic


class Load:
    """Steady /predict traffic from threads: `rate` requests a second, 1 to 3 records each."""

    def __init__(self, url: str, record: dict, rate: float = RATE, threads: int = LOAD_THREADS):
        self.host, self.port = url.removeprefix("http://").split(":")
        self.record, self.threads, self.interval = record, threads, threads / rate
        self.answered: dict[str, tuple[int, float]] = {}  # request id -> (records, answered at)
        self.failures: list[tuple[float, str]] = []  # (when, status or error)
        self.latencies: list[tuple[float, float]] = []  # (answered at, seconds)
        self._stop, self._lock = threading.Event(), threading.Lock()
        self._workers: list[threading.Thread] = []
        self._sizes = itertools.cycle((1, 2, 3))

    def __enter__(self) -> Load:
        for n in range(self.threads):
            worker = threading.Thread(target=self._run, args=(n,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop sending and wait for the requests in flight."""
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)

    @property
    def records(self) -> int:
        """Records in the 200 answers so far."""
        with self._lock:
            return sum(count for count, _ in self.answered.values())

    def _run(self, n: int) -> None:
        connection = http.client.HTTPConnection(self.host, int(self.port), timeout=15)
        next_at = time.monotonic() + n * self.interval / self.threads
        while not self._stop.is_set():
            next_at = max(next_at + self.interval, time.monotonic() - self.interval)
            self._stop.wait(max(0.0, next_at - time.monotonic()))
            with self._lock:
                size = next(self._sizes)
            body = json.dumps({"records": [self.record] * size})
            started = time.monotonic()
            try:
                connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException) as err:
                with self._lock:
                    self.failures.append((time.monotonic(), type(err).__name__))
                connection.close()
                self._stop.wait(0.2)
                continue
            now = time.monotonic()
            with self._lock:
                if response.status == 200:
                    self.answered[json.loads(answer)["request_id"]] = (size, now)
                    self.latencies.append((now, now - started))
                else:
                    self.failures.append((now, str(response.status)))
        connection.close()

    def failures_between(self, start: float, end: float) -> list[str]:
        """The failed requests in [start, end) (monotonic times)."""
        with self._lock:
            return [what for when, what in self.failures if start <= when < end]

    def p99(self, start: float, end: float) -> float:
        """The 99th percentile latency of the 200 answers in [start, end), in seconds."""
        with self._lock:
            values = sorted(s for when, s in self.latencies if start <= when < end)
        return values[int(0.99 * (len(values) - 1))] if values else float("nan")


def example_record(bundle: Path) -> dict:
    """The bundle's example record (a row of the training data)."""
    return json.loads((bundle / "bundle.json").read_text())["example"]


# --------------------------------------------------------------------------- the databases


class SQLiteDatabase:
    """A SQLite prediction log; down = another connection holds the write lock."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "monitoring.db"
        self.url = f"sqlite:///{self.path}"
        self._holder: sqlite3.Connection | None = None

    def down(self) -> None:
        """Take the database's write lock and keep it: the writer times out, then spools."""
        self._holder = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._holder.execute("BEGIN EXCLUSIVE")

    def up(self) -> None:
        """Release the lock."""
        if self._holder is not None:
            self._holder.execute("ROLLBACK")
            self._holder.close()
            self._holder = None


class PostgresDatabase:
    """A database of the module's PostgreSQL; down = the server stopped (`pg_ctl -m fast`)."""

    def __init__(self, cluster: services.PostgresCluster, name: str) -> None:
        self.cluster, self.is_down = cluster, False
        self.url = services.create_database(cluster.admin_url, name)

    def down(self) -> None:
        """Stop the server: open connections are closed, new ones refused."""
        self.cluster.stop()
        self.is_down = True

    def up(self) -> None:
        """Start it again on the same port and data."""
        if self.is_down:
            self.cluster.start()
            self.is_down = False


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.PostgresCluster]:
    """A throwaway PostgreSQL for this module's tests, which stop and start it."""
    with services.postgres_cluster(tmp_path_factory.mktemp("postgres")) as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path):
    """The prediction log's database, up; brought back up after the test if it is down."""
    if request.param == "sqlite":
        db = SQLiteDatabase(tmp_path)
    else:
        name = re.sub(r"\W", "_", request.node.name).lower()[:60]
        db = PostgresDatabase(request.getfixturevalue("postgres"), name)
    yield db
    db.up()


def logged_keys(url: str) -> list[tuple[str, int]]:
    """(request_id, record_index) of every row of the prediction log."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            query = "SELECT request_id, record_index FROM prediction_log"
            return [tuple(row) for row in connection.execute(sa.text(query))]
    finally:
        engine.dispose()


def tally(keys: list[tuple[str, int]]) -> dict[str, int]:
    """Records per request id; fails on a duplicate (request_id, record_index)."""
    duplicates = [key for key, count in Counter(keys).items() if count > 1]
    assert not duplicates, f"{len(duplicates)} duplicated records, e.g. {duplicates[:3]}"
    return Counter(request_id for request_id, _ in keys)


def rollup_records(url: str) -> set[int]:
    """The records each feature's rollups count, where the writer keeps rollups."""
    engine = sa.create_engine(url)
    try:
        if not sa.inspect(engine).has_table("rollup_moments"):
            return set()
        with engine.connect() as connection:
            query = "SELECT feature, SUM(records) FROM rollup_moments GROUP BY feature"
            return {int(total) for _, total in connection.execute(sa.text(query))}
    finally:
        engine.dispose()


def wait_for(condition, seconds: float, what: str, service: Service) -> None:
    """Poll `condition` until true; fail naming `what`, with the service log's tail."""
    try:
        services.wait_until(condition, seconds, what, interval=0.1)
    except TimeoutError as err:
        pytest.fail(f"{err}\n--- serve.log ---\n{services.log_tail(service.log_path)}")


def report(what: str, **figures) -> None:
    """Print the measured figures (shown with pytest -s, and in the output of a failure)."""
    print(f"\n[{what}] " + ", ".join(f"{k}={v}" for k, v in figures.items()))


# --------------------------------------------------------------------------- the tests


def test_outage_under_load_loses_no_record(service, database, served):
    """30 s without the database under ~100 req/s: every answered record reaches the log."""
    server = service(database.url).start()
    with Load(server.url, example_record(served[1])) as load:
        started = time.monotonic()
        time.sleep(5)
        before = server.counters()
        assert before["logged"] > 0 and before["spooled"] == 0, before

        outage_start = time.monotonic()
        database.down()
        spooled_during = 0
        while time.monotonic() - outage_start < OUTAGE_SECONDS:
            time.sleep(1)
            spooled_during = server.counters()["spooled"]
        database.up()
        outage_end = time.monotonic()
        assert spooled_during > 0, "nothing spooled while the database was away"

        # Traffic goes on while the spool is replayed, and a while after.
        time.sleep(5)
        wait_for(lambda: not server.spool_files(), 60, "the spool replayed", server)
        time.sleep(2)
        counters = server.counters()
        stopping = time.monotonic()
        status = server.terminate()  # under load: in-flight requests drain, the queue flushes
    answered = dict(load.answered)
    logged = tally(logged_keys(database.url))
    report(
        f"outage {type(database).__name__}",
        requests_200=len(answered),
        distinct_logged_ids=len(logged),
        records=sum(count for count, _ in answered.values()),
        rows=sum(logged.values()),
        spooled_during_outage=spooled_during,
        metrics=counters,
        outage_s=round(outage_end - outage_start, 1),
        load_s=round(stopping - started, 1),
        p99_ms_before=round(1000 * load.p99(0, outage_start), 1),
        p99_ms_outage=round(1000 * load.p99(outage_start, outage_end), 1),
        p99_ms_after=round(1000 * load.p99(outage_end, stopping), 1),
        failed_after_sigterm=len(load.failures_between(stopping, float("inf"))),
    )

    assert status == 0, server.log
    assert load.failures_between(0, stopping) == [], "requests failed while the database was away"
    # A request path that waited for the database would take seconds (SQLite's busy timeout).
    assert load.p99(outage_start, outage_end) < 1.0, "requests slowed down by the outage"
    assert counters["dropped"] == 0, counters
    missing = set(answered) - set(logged)
    assert not missing, f"{len(missing)} of {len(answered)} answered requests are not in the log"
    assert len(logged) == len(answered), "the log holds requests that were never answered"
    assert all(logged[rid] == count for rid, (count, _) in answered.items()), "records missing"
    assert not server.spool_files() and not server.spool_files(".rejected")
    assert "prediction log database unavailable" in server.log
    assert "prediction log database is back" in server.log
    assert rollup_records(database.url) <= {sum(logged.values())}, "rollups disagree with the log"


def test_kill_9_during_replay_and_under_load_then_restart(service, database, served):
    """SIGTERM in an outage spools the queue; kill -9 mid-replay then loses and duplicates
    nothing; kill -9 under load loses only the last moment's records, in memory."""
    record = example_record(served[1])
    server = service(database.url).start()

    # 1. An outage under load, then SIGTERM under load while the database is still away:
    # what the queue holds goes to the spool too.
    with Load(server.url, record) as first:
        time.sleep(2)
        database.down()
        time.sleep(10)
        stopping = time.monotonic()
        assert server.terminate() == 0, server.log
    assert first.failures_between(0, stopping) == []
    records = first.records

    # 2. A restart while the database is away; it returns; kill -9 lands mid-replay.
    server.start()
    backlog = len(server.spool_files())
    assert server.counters()["logged"] == 0
    database.up()
    deadline, left = time.monotonic() + 60, backlog
    while time.monotonic() < deadline and left >= backlog * 0.8:
        time.sleep(0.001)
        left = len(server.spool_files())
    server.kill()
    left = len(server.spool_files())
    assert 0 < left < backlog, f"the kill missed the replay: {left} of {backlog} files left"

    # 3. A restart replays the rest: all of phase 1, once.
    server.start()
    wait_for(lambda: not server.spool_files(), 60, "the spool replayed after restart", server)
    logged = tally(logged_keys(database.url))
    assert set(logged) == set(first.answered), "phase 1: lost or extra requests"
    assert all(logged[rid] == count for rid, (count, _) in first.answered.items())

    # 4. kill -9 under load with the database up: only the last moment's records may be lost.
    with Load(server.url, record) as second:
        time.sleep(5)
        killed_at = time.monotonic()
        server.kill()
    server.start()
    wait_for(lambda: not server.spool_files(), 60, "the spool replayed", server)
    assert server.terminate() == 0, server.log

    logged = tally(logged_keys(database.url))
    answered = {**first.answered, **second.answered}
    lost = {rid: count for rid, (count, _) in answered.items() if logged.get(rid) != count}
    late = {rid for rid, (_, at) in second.answered.items() if at > killed_at - WRITE_LAG_SECONDS}
    unanswered = set(logged) - set(answered)  # predicted and logged, but killed before answering
    report(
        f"kill -9 {type(database).__name__}",
        phase1_requests_200=len(first.answered),
        phase1_records=records,
        spool_files=backlog,
        files_left_at_kill=left,
        phase2_requests_200=len(second.answered),
        records_lost_at_kill=sum(lost.values()),
        requests_lost_at_kill=len(lost),
        logged_unanswered=len(unanswered),
        distinct_logged_ids=len(logged),
        rows=sum(logged.values()),
    )
    assert sum(lost.values()) <= KILL_LOSS_BOUND
    assert set(lost) <= late, "records answered well before the kill were lost"
    assert len(unanswered) <= len(second.failures), "the log holds requests nobody sent"
    assert not server.spool_files(".rejected")
    assert rollup_records(database.url) <= {sum(logged.values())}, "rollups disagree with the log"


def test_spool_cap_drops_only_past_the_cap_and_counts_it(service, database, served, tmp_path):
    """A 40 KiB spool while the database is away: what fits is kept and replayed, the rest
    dropped and counted, and nothing is dropped before the cap or after the database returns."""
    if isinstance(database, SQLiteDatabase):
        # The service starts without a database: its folder is not there yet.
        database = SQLiteDatabase(tmp_path / "not-yet")
    cap = 40 * 1024
    server = service(database.url, PREDICTION_LOG_SPOOL_CAP_BYTES=str(cap))
    if isinstance(database, PostgresDatabase):
        database.down()
    server.start()
    record = example_record(served[1])

    def send(count: int) -> list[str]:
        ids = []
        for _ in range(count):
            body = json.dumps({"records": [record]}).encode()
            request = urllib.request.Request(
                f"{server.url}/predict", body, {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                ids.append(json.loads(response.read())["request_id"])
        return ids

    first = send(20)  # well under the cap
    wait_for(lambda: server.counters()["spooled"] == 20, 30, "20 records spooled", server)
    assert server.counters()["dropped"] == 0
    more = send(180)  # well over it
    wait_for(
        lambda: sum(server.counters()[n] for n in ("spooled", "dropped")) == 200,
        30,
        "200 records spooled or dropped",
        server,
    )
    full = server.counters()
    on_disk = sum(path.stat().st_size for path in server.spool_files())
    report(f"spool cap {type(database).__name__}", cap_bytes=cap, spool_bytes=on_disk, **full)
    line = on_disk / full["spooled"]
    assert full["logged"] == 0 and full["dropped"] > 0, full
    assert cap - line < on_disk <= cap, f"the spool holds {on_disk} bytes, its cap is {cap}"
    assert "at its cap" in server.log

    if isinstance(database, SQLiteDatabase):
        database.path.parent.mkdir()
    else:
        database.up()
    wait_for(
        lambda: server.counters()["logged"] == full["spooled"], 60, "the spool replayed", server
    )
    assert not server.spool_files()
    after = send(50)
    wait_for(lambda: server.counters()["logged"] == full["spooled"] + 50, 30, "50 logged", server)
    final = server.counters()
    assert final["dropped"] == full["dropped"], "dropped while the database was up"
    assert server.terminate() == 0, server.log

    logged = tally(logged_keys(database.url))
    assert set(first) <= set(logged), "a record spooled before the cap was reached is lost"
    assert set(after) <= set(logged)
    assert len(set(first + more) - set(logged)) == full["dropped"]
    assert rollup_records(database.url) <= {sum(logged.values())}, "rollups disagree with the log"
    report(f"spool cap {type(database).__name__} at the end", rows=len(logged), **final)
