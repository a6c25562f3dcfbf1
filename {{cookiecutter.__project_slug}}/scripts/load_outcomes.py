"""Load ground truth that arrived after the predictions, so `make monitor` reports live metrics.

From a CSV or Parquet file (--file) or a SQL query (--query, run against SOURCE_DATABASE_URL)
with one row per predicted record and the columns:

  request_id    the request_id of the /predict response (also its X-Request-ID header)
  record_index  the record's position in that request's list of records, from 0; optional,
                default 0, which suits one-record requests only: a file that repeats a
                request_id without it is refused
  actual        the true label (classification) or number (regression)

Loading the same outcomes twice changes nothing; loading a corrected actual for an outcome
replaces it. Labels not among params.yaml data.target_classes (when declared) are refused. The
log says how many match a logged
prediction and names some that do not (a mistyped id, or a prediction still spooled by the
service); only matched outcomes count in live metrics.
"""

from __future__ import annotations

import argparse
import logging

import pandas as pd
import sqlalchemy as sa

from {{ cookiecutter.__package_name }} import data as datalib
from {{ cookiecutter.__package_name }}.cli import run
from {{ cookiecutter.__package_name }}.config import Backends, load_params
from {{ cookiecutter.__package_name }}.monitoring.outcomes import EXAMPLES, load
from {{ cookiecutter.__package_name }}.monitoring.prediction_log import (
    database_refused,
    monitoring_database,
)

log = logging.getLogger("load_outcomes")


def read(file: str | None, query: str | None, backends: Backends) -> pd.DataFrame:
    """The outcomes as a frame, from whichever source was given."""
    if file:
        return datalib.read_file(file, {}, "the outcomes file (FILE=)")
    return datalib.load_source(
        {"source": "sql", "query": query}, "regression", backends.source_database_url
    )


def main(argv: list[str] | None = None) -> int:
    """Insert outcomes into the monitoring database; report how many were new and matched."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--file", help="a .csv or .parquet path or URL")
    source.add_argument("--query", help="SQL returning request_id, actual[, record_index]")
    args = parser.parse_args(argv)
    if not (args.file or args.query):
        parser.error(
            'name the outcomes: FILE=outcomes.csv (a CSV or Parquet file) or QUERY="select '
            'request_id, record_index, actual ..." for make; --file or --query for this script'
        )

    def step() -> int:
        backends = Backends.from_env()
        params = load_params()
        task = params["model"]["task"]  # a regression's actuals must be numbers
        classes = params["data"].get("target_classes")  # a classifier's must be its labels
        bounds = (params["data"].get("bounds") or {}).get(params["data"]["target"])
        frame = read(args.file, args.query, backends)
        # send-batch's and predict's OUT= carry the file's data.ignore columns (ids): passed over.
        frame = frame.drop(columns=[c for c in params["data"].get("ignore") or [] if c in frame])
        if frame.empty:  # a scheduled load with nothing new is no failure, but say so
            log.warning("%s holds no outcome rows: nothing loaded", args.file or "the query")
        engine = monitoring_database(backends.monitoring_database_url)
        try:
            loaded = load(engine, frame, task, classes, bounds)
        except sa.exc.OperationalError as err:
            raise database_refused(engine, err) from err
        where = engine.url.render_as_string(hide_password=True)
        log.info(
            "loaded %s outcomes into %s (%s new, %s replacing one stored before); %s match a "
            "logged prediction",
            loaded.rows,
            where,
            loaded.new,
            loaded.rows - loaded.new,
            loaded.matched,
        )
        if loaded.unmatched:
            log.warning(
                "%s outcomes match no logged prediction, e.g. (request_id, record_index) %s: "
                "request_id must be the /predict response's request_id and record_index the "
                "record's position in that request (or the prediction is still spooled by the "
                "service, or it logs to another database than %s: MONITORING_DATABASE_URL); "
                "they are kept, and count in live metrics once their prediction is logged",
                len(loaded.unmatched),
                ", ".join(f"({r}, {i})" for r, i in loaded.unmatched[:EXAMPLES]),
                where,
            )
        return 0

    return run(step)


if __name__ == "__main__":
    raise SystemExit(main())
