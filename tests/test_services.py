"""Exercise the loopback service helpers in tests/services.py against real servers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import services

pytestmark = pytest.mark.services


def _started(name: str, since: float) -> None:
    """Print how long service ``name`` took to start."""
    print(f"\n[services] {name} started in {time.perf_counter() - since:.2f}s", flush=True)


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory: pytest.TempPathFactory):
    """A throwaway PostgreSQL server's URL to database ``mlops``."""
    since = time.perf_counter()
    with services.postgres_server(tmp_path_factory.mktemp("postgres")) as url:
        _started("postgres", since)
        yield url


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    """A moto S3 endpoint."""
    since = time.perf_counter()
    with services.s3_server(tmp_path_factory.mktemp("s3")) as endpoint:
        _started("moto s3", since)
        yield endpoint


def _query(url: str, sql: str) -> list[tuple]:
    """Run ``sql`` on ``url`` and return all rows."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(sql))]
    finally:
        engine.dispose()


def test_free_port_and_wait_until_timeout() -> None:
    """free_port gives a usable port; wait_until names what it waited for."""
    assert 1024 <= services.free_port() <= 65535
    with pytest.raises(TimeoutError, match="the impossible"):
        services.wait_until(lambda: False, 0.3, "the impossible", interval=0.05)


def test_postgres_select_one(postgres_url: str) -> None:
    """The main database answers on 127.0.0.1."""
    assert postgres_url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    assert _query(postgres_url, "select 1, current_database()") == [(1, "mlops")]


def test_postgres_second_database(postgres_url: str) -> None:
    """create_database returns a URL to a separate database on the same server."""
    url = services.create_database(postgres_url, "monitoring")
    assert url.rsplit("/", 1) == [postgres_url.rsplit("/", 1)[0], "monitoring"]
    assert _query(url, "select 1, current_database()") == [(1, "monitoring")]


def test_s3_put_get_with_env(s3: services.S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain boto3 client configured only through env() reaches moto."""
    boto3 = pytest.importorskip("boto3")
    assert s3.create_bucket("services-test") == "s3://services-test"
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3")
    client.put_object(Bucket="services-test", Key="dir/hello.txt", Body=b"hello")
    body = client.get_object(Bucket="services-test", Key="dir/hello.txt")["Body"].read()
    assert body == b"hello"


def test_s3_server_stops_when_body_fails(tmp_path: Path) -> None:
    """The moto process is gone after the with-block raised."""
    with (
        pytest.raises(RuntimeError, match="boom"),
        services.s3_server(tmp_path) as endpoint,
    ):
        assert services.http_status(f"{endpoint.endpoint_url}/moto-api/") == 200
        raise RuntimeError("boom")
    with pytest.raises(OSError):
        services.http_status(f"{endpoint.endpoint_url}/moto-api/")
