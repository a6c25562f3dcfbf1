"""Throwaway loopback servers (PostgreSQL, moto S3, MLflow) for the template's tests.

Everything binds to 127.0.0.1 on a free port and is stopped by its context manager,
even when the body raises. Nothing here depends on pytest.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

HOST = "127.0.0.1"
PG_SUPERUSER = "postgres"
PG_DATABASE = "mlops"
PG_OS_USER = "pgtest"
PG_READY_TIMEOUT = 30.0
S3_READY_TIMEOUT = 30.0
MLFLOW_READY_TIMEOUT = 60.0
# Keeps MLflow (server and clients) from phoning home and from starting its job runner.
MLFLOW_OFFLINE_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}
T = TypeVar("T")


# --------------------------------------------------------------------------- generic


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll ``predicate`` until truthy (OSError = not yet); else TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = predicate()
            if result:
                return result
            last = result
        except OSError as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def log_tail(path: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of the log at ``path`` (or why it cannot be read)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        return f"<no log: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def explain_failure(what: str, log_path: Path) -> Iterator[None]:
    """Re-raise a start-up failure of ``what`` as RuntimeError carrying its log tail."""
    try:
        yield
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        tail = log_tail(log_path)
        raise RuntimeError(
            f"{what} failed to start: {exc}\n--- {log_path} (tail) ---\n{tail}"
        ) from exc


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the process group of ``proc``, SIGKILL it if still alive after ``timeout`` s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
            break
        except subprocess.TimeoutExpired:
            continue
    # Reap stragglers left in the group (e.g. uvicorn workers of mlflow server).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def running_process(
    cmd: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` in its own session with output to ``log_path``; stop its group on exit."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with Path(log_path).open("ab") as log:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop_process(proc)


def http_status(url: str, proc: subprocess.Popen | None = None) -> int:
    """Return the HTTP status of GET ``url``; raise RuntimeError if ``proc`` has exited."""
    if proc is not None and proc.poll() is not None:
        raise RuntimeError(f"process exited with code {proc.returncode}")
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


# --------------------------------------------------------------------------- PostgreSQL


def _version_key(bindir: Path) -> tuple[int, ...]:
    """Sort key for /usr/lib/postgresql/<version>/bin."""
    return tuple(int(part) for part in bindir.parent.name.split(".") if part.isdigit())


def find_pg_bindir() -> Path | None:
    """Return the dir of initdb/pg_ctl: from PATH, else newest /usr/lib/postgresql/*/bin."""
    initdb = shutil.which("initdb")
    if initdb and (Path(initdb).resolve().parent / "pg_ctl").exists():
        return Path(initdb).resolve().parent
    candidates = [
        path
        for path in Path("/usr/lib/postgresql").glob("*/bin")
        if (path / "initdb").exists() and (path / "pg_ctl").exists()
    ]
    return max(candidates, key=_version_key, default=None)


def _apt_install(*packages: str) -> None:
    """apt-get install ``packages``, running apt-get update first only if the install fails."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    # Package lists missing or stale: update and retry.
    if subprocess.run(cmd, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True)
        subprocess.run(cmd, env=env, check=True)


def ensure_pg_bindir() -> Path:
    """Find PostgreSQL's server binaries, apt-installing ``postgresql`` as root if missing."""
    bindir = find_pg_bindir()
    if bindir is None and os.geteuid() == 0 and shutil.which("apt-get"):
        _apt_install("postgresql")
        bindir = find_pg_bindir()
    if bindir is None:
        raise RuntimeError(
            "PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH nor under "
            "/usr/lib/postgresql/*/bin. Install them (Debian/Ubuntu: `sudo apt-get install "
            "postgresql`; macOS: `brew install postgresql`) or put their bin directory on PATH."
        )
    return bindir


def pg_os_user() -> str | None:
    """Return the unprivileged account to run PostgreSQL as when root (creating ``pgtest``)."""
    if os.geteuid() != 0:
        return None
    for attempt in range(2):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(PG_OS_USER).pw_name
        if attempt == 0 and shutil.which("useradd"):
            opts = ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
            subprocess.run(["useradd", *opts, PG_OS_USER], check=False, capture_output=True)
    return "nobody"


def _as_user(cmd: Sequence[str], user: str | None) -> list[str]:
    """Prefix ``cmd`` so that it runs as ``user`` (unchanged when ``user`` is None)."""
    if user is None:
        return [str(part) for part in cmd]
    if shutil.which("runuser"):
        return ["runuser", "-u", user, "--", *map(str, cmd)]
    entry = pwd.getpwnam(user)
    return [
        "setpriv",
        f"--reuid={entry.pw_uid}",
        f"--regid={entry.pw_gid}",
        "--init-groups",
        "--",
        *map(str, cmd),
    ]


def _run(cmd: Sequence[str], user: str | None, cwd: Path) -> None:
    """Run ``cmd`` as ``user`` in ``cwd``; raise RuntimeError with its output on failure."""
    done = subprocess.run(_as_user(cmd, user), cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, cmd))} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
        )


def _make_cluster_dir(base_dir: Path, user: str | None) -> Path:
    """Return an empty cluster dir: in ``base_dir``, or as root a temp dir owned by ``user``."""
    if user is None:
        base_dir = base_dir.resolve()
        base_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="pg-", dir=base_dir))
    # As root, base_dir (pytest's basetemp is 0700) is usually not reachable by ``user``.
    path = Path(tempfile.mkdtemp(prefix="pgtest-"))
    shutil.chown(path, user=user, group=pwd.getpwnam(user).pw_gid)
    return path


def _init_cluster(bindir: Path, data: Path, port: int, user: str | None) -> None:
    """initdb a trust-auth cluster in ``data`` listening only on 127.0.0.1:``port``."""
    opts = f"-U {PG_SUPERUSER} --auth=trust -E UTF8 --locale=C --no-sync".split()
    _run([bindir / "initdb", "-D", data, *opts], user, data.parent)
    # Unix socket next to the data dir (never /var/run/postgresql); none if the path is too long.
    sock_dir = str(data.parent) if len(str(data.parent)) < 90 else ""
    settings = {
        "listen_addresses": f"'{HOST}'",
        "port": str(port),
        "unix_socket_directories": f"'{sock_dir}'",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
    }
    with (data / "postgresql.conf").open("a") as conf:
        conf.write("".join(f"{key} = {value}\n" for key, value in settings.items()))


def _pg_ready(bindir: Path, port: int) -> bool:
    """Return whether the server on ``port`` accepts connections."""
    if not (bindir / "pg_isready").exists():
        socket.create_connection((HOST, port), timeout=2).close()
        return True
    opts = f"-q -h {HOST} -p {port} -U {PG_SUPERUSER} -d postgres".split()
    cmd = [bindir / "pg_isready", *opts]
    return subprocess.run(cmd, check=False, capture_output=True).returncode == 0


def _pg_start(bindir: Path, data: Path, log: Path, port: int, user: str | None) -> None:
    """Start the cluster in ``data`` with pg_ctl and wait until it accepts connections."""
    opts = ["-D", data, "-l", log, "-w", "-t", str(int(PG_READY_TIMEOUT))]
    _run([bindir / "pg_ctl", *opts, "start"], user, data.parent)
    what = f"PostgreSQL on port {port}"
    wait_until(lambda: _pg_ready(bindir, port), PG_READY_TIMEOUT, what)


def _pg_stop(bindir: Path, data: Path, user: str | None) -> None:
    """Stop the cluster in ``data`` (pg_ctl -m fast, SIGQUIT to the postmaster as a fallback)."""
    with contextlib.suppress(RuntimeError):
        _run(
            [bindir / "pg_ctl", "-D", data, "-m", "fast", "-w", "-t", "30", "stop"],
            user,
            data.parent,
        )
        return
    with contextlib.suppress(OSError, ValueError, IndexError):
        os.kill(int((data / "postmaster.pid").read_text().split()[0]), signal.SIGQUIT)


def create_database(url: str, name: str) -> str:
    """Create database ``name`` on the server of SQLAlchemy ``url`` and return a URL to it."""
    import sqlalchemy as sa

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
        raise ValueError(f"unsafe database name: {name!r}")
    base = sa.make_url(url)
    engine = sa.create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


@dataclass(frozen=True)
class PostgresCluster:
    """A running throwaway PostgreSQL that a test may stop and start again, same port and data."""

    bindir: Path
    data: Path
    log: Path
    port: int
    user: str | None

    @property
    def admin_url(self) -> str:
        """A SQLAlchemy URL to the superuser's database ``postgres``."""
        return f"postgresql+psycopg://{PG_SUPERUSER}@{HOST}:{self.port}/postgres"

    def stop(self) -> None:
        """Stop the server (``pg_ctl -m fast``: open connections are closed)."""
        _pg_stop(self.bindir, self.data, self.user)

    def start(self) -> None:
        """Start the server again and wait until it accepts connections."""
        with explain_failure(f"PostgreSQL on {HOST}:{self.port}", self.log):
            _pg_start(self.bindir, self.data, self.log, self.port, self.user)


@contextlib.contextmanager
def postgres_cluster(base_dir: Path) -> Iterator[PostgresCluster]:
    """Run a throwaway PostgreSQL on 127.0.0.1; yield it, to stop and start at will."""
    bindir, user = ensure_pg_bindir(), pg_os_user()
    root, port = _make_cluster_dir(Path(base_dir), user), free_port()
    cluster = PostgresCluster(bindir, root / "data", root / "postgres.log", port, user)
    try:
        with explain_failure(f"PostgreSQL on {HOST}:{port}", cluster.log):
            _init_cluster(bindir, cluster.data, port, user)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def postgres_server(base_dir: Path) -> Iterator[str]:
    """Run a throwaway PostgreSQL on 127.0.0.1; yield a SQLAlchemy URL to database ``mlops``."""
    with postgres_cluster(base_dir) as cluster:
        yield create_database(cluster.admin_url, PG_DATABASE)


# --------------------------------------------------------------------------- S3 (moto)


@dataclass(frozen=True)
class S3Endpoint:
    """A running S3-compatible endpoint and the credentials it accepts."""

    endpoint_url: str
    access_key: str = "testing"
    secret_key: str = "testing"
    region: str = "us-east-1"

    def env(self) -> dict[str, str]:
        """Environment variables pointing boto3, s3fs (dvc-s3) and MLflow at this endpoint."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self) -> Any:
        """Return a boto3 S3 client bound to this endpoint."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` and return its ``s3://`` URL."""
        extra: dict[str, Any] = {}
        if self.region != "us-east-1":
            extra["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        self.client().create_bucket(Bucket=name, **extra)
        return f"s3://{name}"


@contextlib.contextmanager
def s3_server(base_dir: Path) -> Iterator[S3Endpoint]:
    """Run moto's S3 server (``python -m moto.server``) on a free loopback port."""
    if importlib.util.find_spec("moto") is None:
        raise RuntimeError("moto is not installed in this interpreter: pip install 'moto[server]'")
    port = free_port()
    log = Path(base_dir) / f"moto-{port}.log"
    cmd = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]
    with running_process(cmd, log) as proc:
        endpoint = S3Endpoint(endpoint_url=f"http://{HOST}:{port}")
        with explain_failure(f"moto S3 server on {HOST}:{port}", log):
            wait_until(
                lambda: http_status(f"{endpoint.endpoint_url}/moto-api/", proc) == 200,
                S3_READY_TIMEOUT,
                f"moto S3 server on port {port}",
            )
        yield endpoint


# --------------------------------------------------------------------------- MLflow


@contextlib.contextmanager
def _work_dir(path: Path | None, prefix: str) -> Iterator[Path]:
    """Yield ``path`` (created if needed), or a temporary directory removed afterwards."""
    if path is not None:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path)
        return
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def mlflow_server_command(
    python: str, port: int, backend_store_uri: str, artifacts_destination: str
) -> list[str]:
    """Return the argv of an MLflow server proxying artifacts to ``artifacts_destination``."""
    opts = f"--host {HOST} --port {port} --workers 1 --serve-artifacts".split()
    return [
        *(python, "-m", "mlflow", "server", *opts),
        *("--backend-store-uri", backend_store_uri),
        *("--artifacts-destination", artifacts_destination),
    ]


@contextlib.contextmanager
def mlflow_server(
    backend_store_uri: str,
    artifacts_destination: str,
    python: str,
    env: Mapping[str, str],
    workdir: Path | None = None,
) -> Iterator[str]:
    """Run ``python -m mlflow server`` on a free loopback port; yield its URL once healthy."""
    if shutil.which(python) is None:
        raise RuntimeError(f"no Python interpreter at {python!r} to run mlflow with")
    port = free_port()
    url, full_env = f"http://{HOST}:{port}", {**os.environ, **MLFLOW_OFFLINE_ENV, **env}
    cmd = mlflow_server_command(python, port, backend_store_uri, artifacts_destination)
    with _work_dir(workdir, "mlflow-server-") as cwd:
        log = cwd / f"mlflow-server-{port}.log"
        with running_process(cmd, log, env=full_env, cwd=cwd) as proc:
            with explain_failure(f"MLflow server on {url}", log):
                what = f"MLflow server on port {port}"
                wait_until(
                    lambda: http_status(f"{url}/health", proc) == 200,
                    MLFLOW_READY_TIMEOUT,
                    what,
                )
            yield url
