"""Load ground truth that arrived after the predictions (request id -> actual value).

From a CSV or Parquet file (--file) or a SQL query (--query, run against SOURCE_DATABASE_URL),
with columns request_id, actual and optionally record_index (default 0). Loading the same
outcomes twice changes nothing.
"""

from __future__ import annotations

import argparse
import logging

import pandas as pd
import sqlalchemy as sa

from {{ cookiecutter.__package_name }} import data as datalib
from {{ cookiecutter.__package_name }}.cli import run
from {{ cookiecutter.__package_name }}.config import Backends
from {{ cookiecutter.__package_name }}.errors import PipelineError
from {{ cookiecutter.__package_name }}.monitoring.outcomes import store_outcomes

log = logging.getLogger("load_outcomes")


def read(file: str | None, query: str | None, backends: Backends) -> pd.DataFrame:
    """The outcomes as a frame, from whichever source was given."""
    if file:
        return datalib.load_source({"source": file}, "regression", None)
    return datalib.load_source(
        {"source": "sql", "query": query}, "regression", backends.source_database_url
    )


def main(argv: list[str] | None = None) -> int:
    """Insert outcomes into the monitoring database; report how many were new."""
    parser = argparse.ArgumentParser(description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", help="a .csv or .parquet path or URL")
    source.add_argument("--query", help="SQL returning request_id, actual[, record_index]")
    args = parser.parse_args(argv)

    def step() -> int:
        backends = Backends.from_env()
        frame = read(args.file, args.query, backends)
        engine = sa.create_engine(backends.monitoring_database_url)
        try:
            added = store_outcomes(engine, frame)
        except sa.exc.OperationalError as err:
            raise PipelineError(f"monitoring database unreachable: {err.orig}") from err
        log.info("loaded %s outcomes (%s new)", len(frame), added)
        return 0

    return run(step)


if __name__ == "__main__":
    raise SystemExit(main())
