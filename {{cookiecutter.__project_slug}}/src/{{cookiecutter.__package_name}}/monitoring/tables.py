"""The monitoring tables, in SQLAlchemy Core: one definition for SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
)
from sqlalchemy.exc import IntegrityError, ProgrammingError

metadata = MetaData()

# One row per predicted record; (request_id, record_index) makes a retried insert a no-op.
prediction_log = Table(
    "prediction_log",
    metadata,
    Column("request_id", Text, primary_key=True),
    Column("record_index", Integer, primary_key=True, autoincrement=False),
    # SQLite keeps no time zone: the writer stores UTC there, so read naive values as UTC.
    Column("logged_at", DateTime(timezone=True), nullable=False),
    Column("model_name", Text, nullable=False),
    Column("model_version", Text, nullable=False),
    Column("features", JSON, nullable=False),
    Column("prediction", Text, nullable=False),
    Column("prediction_value", Float, nullable=True),
    # none_as_null: a regression's missing probabilities are SQL NULL, not the JSON text 'null'.
    Column("probabilities", JSON(none_as_null=True), nullable=True),
    Column("latency_ms", Float, nullable=False),
    # Monitoring reads the log by time window.
    Index("ix_prediction_log_logged_at", "logged_at"),
)
# The writer handles a prediction_log row as a tuple in column order, read by these positions
# (tests/test_prediction_log.py checks them against the table).
(
    REQUEST_ID,
    RECORD_INDEX,
    LOGGED_AT,
    MODEL_NAME,
    MODEL_VERSION,
    FEATURES,
    PREDICTION,
    PREDICTION_VALUE,
    PROBABILITIES,
    LATENCY_MS,
) = range(len(prediction_log.columns))

# The actual outcome of a predicted record, once known (record_index 0 for one-record requests).
outcomes = Table(
    "outcomes",
    metadata,
    Column("request_id", Text, primary_key=True),
    Column("record_index", Integer, primary_key=True, autoincrement=False, default=0),
    Column("actual", Text, nullable=False),
    Column("actual_value", Float, nullable=True),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)

# One statistic of one feature (or of the prediction) per day and model version.
daily_stats = Table(
    "daily_stats",
    metadata,
    Column("day", Date, primary_key=True),
    Column("model_version", Text, primary_key=True),
    Column("feature", Text, primary_key=True),
    Column("statistic", Text, primary_key=True),
    Column("value", Float, nullable=True),
)

# Rollups: the log's statistics per hour, kept by the prediction-log writer in the transaction that
# inserts the rows (rollups.py). Buckets are Unix seconds (UTC) at the start of the hour; feature
# names starting with "_" are the service's own outputs (prediction, probability, latency).
# SQLite keeps them WITHOUT ROWID: one B-tree per table, so an upsert touches one, not two.

# The grid a model version's rollups use (its training profile's bin edges and cell layout).
rollup_grids = Table(
    "rollup_grids",
    metadata,
    Column("model_version", Text, primary_key=True),
    Column("grid", Text, nullable=False),
)


def _rollup(name: str, *columns: Column) -> Table:
    """A rollup table: keyed by hour bucket, model version and feature, then by `columns`."""
    return Table(
        name,
        metadata,
        Column("bucket", BigInteger, primary_key=True, autoincrement=False),
        Column("model_version", Text, primary_key=True),
        Column("feature", Text, primary_key=True),
        *columns,
        sqlite_with_rowid=False,
    )


# Records, values present, sum, sum of squares, min and max per bucket, version and feature.
rollup_moments = _rollup(
    "rollup_moments",
    Column("records", BigInteger, nullable=False),
    Column("keyed", BigInteger, nullable=False),
    Column("present", BigInteger, nullable=False),
    Column("total", Float, nullable=True),
    Column("total_sq", Float, nullable=True),
    Column("low", Float, nullable=True),
    Column("high", Float, nullable=True),
)

# Counts of a numeric feature per cell: `bin` is the training profile's bin (exact), `cell` the
# index of a finer cell within it (rollups.Axis), for percentiles.
rollup_bins = _rollup(
    "rollup_bins",
    Column("bin", Integer, primary_key=True, autoincrement=False),
    Column("cell", Integer, primary_key=True, autoincrement=False),
    Column("n", BigInteger, nullable=False),
)

# Counts of a categorical feature per category (missing values are records - present).
rollup_categories = _rollup(
    "rollup_categories",
    Column("category", Text, primary_key=True),
    Column("n", BigInteger, nullable=False),
)


def create_tables(engine, attempts: int = 3) -> None:
    """Create the monitoring tables that are missing. Processes that start at once on an empty
    PostgreSQL database (workers, services, a monitor run) race to create them, and each CREATE
    of the losers fails (a duplicate table or type) once the winner commits: it is checked
    again, as the tables now exist."""
    for attempt in range(attempts):
        try:
            metadata.create_all(engine, checkfirst=True)
            return
        except (IntegrityError, ProgrammingError):
            if attempt == attempts - 1:
                raise
