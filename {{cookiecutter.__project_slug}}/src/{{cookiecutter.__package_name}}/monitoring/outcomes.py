"""Ground truth that arrives after the prediction, stored beside the prediction log.

An outcome names the predicted record it belongs to by (request_id, record_index): the
request_id of the /predict response, and the record's position in the request's list (0 for
the first or only record).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa

from ..batches import PROBABILITY_PREFIX
from ..data import bounds_text, label_text, outside_bounds, plain
from ..errors import PipelineError
from .tables import create_tables, outcomes
from .tables import prediction_log as log_table

REQUIRED = ("request_id", "actual")
COLUMNS = (
    "request_id (the /predict response's request_id), record_index (the record's position in "
    "that request's list, from 0; optional, default 0: one-record requests) and actual"
)
# send-batch's OUT= file's other columns: with an actual column added, it is an outcomes file.
PASSED_OVER = ("row", "prediction")
EXAMPLES = 5  # ids or rows a message names, at most
# How messages number the rows of an outcomes file or query result: as make data and send-batch do.
COUNTED = "counted from 0, the header not counted"
LOOKUP_CHUNK = 500  # request ids per IN (...) query: well under any database's parameter limit


def outcome_rows(
    frame: pd.DataFrame,
    task: str | None = None,
    classes: list | None = None,
    bounds: tuple | None = None,
) -> list[dict]:
    """Rows for the outcomes table, refusing a frame without the required columns or with
    others, or else naming every problem of its rows at once: empty or repeated keys, a
    record_index that is no position, an actual that is not a number (task "regression") or
    outside `bounds` (the target's data.bounds), or not one of `classes` (data.target_classes,
    when declared)."""
    _refuse_other_columns(frame)
    empty = {column: np.flatnonzero(frame[column].isna()).tolist() for column in REQUIRED}
    index = frame["record_index"] if "record_index" in frame.columns else pd.Series(0, frame.index)
    numbers = [_number(i) for i in index]
    positions = [n is not None and n >= 0 and n.is_integer() for n in numbers]
    keys = [
        (str(request_id), int(n) if ok else -1)
        for request_id, n, ok in zip(frame["request_id"], numbers, positions, strict=True)
    ]
    no_id = set(empty["request_id"])
    keyed = [key for row, key in enumerate(keys) if positions[row] and row not in no_id]
    values = [_number(actual) for actual in frame["actual"]]
    unknown = set(empty["actual"])
    problems = [
        *(_empty(rows, column) for column, rows in empty.items()),
        _not_positions(index, positions),
        _repeated(keyed, "record_index" in frame.columns),
        _unknown_labels(frame["actual"], classes, unknown),
        _out_of_bounds(frame["actual"], bounds),
        _not_numbers(frame, values, unknown) if task == "regression" else None,
    ]
    problems = [problem for problem in problems if problem]
    if problems:
        raise PipelineError("; ".join(problems) + " (nothing was loaded)")
    now = datetime.now(UTC)
    return [
        {
            "request_id": request_id,
            "record_index": record_index,
            "actual": label_text(actual),
            "actual_value": value,
            "recorded_at": now,
        }
        for (request_id, record_index), actual, value in zip(
            keys, frame["actual"], values, strict=True
        )
    ]


def _refuse_other_columns(frame: pd.DataFrame) -> None:
    """Refuse a frame without the required columns, or with others."""
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise PipelineError(f"outcomes need columns {COLUMNS}; missing {missing}")
    unknown = [
        str(c)
        for c in frame.columns
        if c not in (*REQUIRED, "record_index", *PASSED_OVER)
        and not str(c).startswith(PROBABILITY_PREFIX)
    ]
    if unknown:  # a misspelt record_index would attach every outcome to record 0
        raise PipelineError(
            f"outcomes take only the columns {COLUMNS}, and send-batch OUT='s {PASSED_OVER}, "
            f"{PROBABILITY_PREFIX}<class> and data.ignore columns; "
            f"unknown {unknown}: rename or leave them out (a column named twice reads as name.1)"
        )


def _empty(rows: list[int], column: str) -> str | None:
    """Rows with no value in a required column."""
    if not rows:
        return None
    return (
        f"{len(rows)} outcome rows have no {column} (rows {rows[:EXAMPLES]}, {COUNTED}): "
        "leave out the rows whose outcome is not known yet"
    )


def _not_positions(index: pd.Series, positions: list[bool]) -> str | None:
    """Rows whose record_index is no position in a request's list."""
    rows = [row for row, ok in enumerate(positions) if not ok]
    if not rows:
        return None
    return (
        f"{len(rows)} outcome rows (rows {rows[:EXAMPLES]}, {COUNTED}) have a record_index that "
        f"is not a whole number from 0, e.g. {plain(index.iloc[rows[0]])!r}: it is the record's "
        "position in the request's list"
    )


def _repeated(keys: list[tuple[str, int]], has_index: bool) -> str | None:
    """Outcomes whose keys repeat: all but one would be silently dropped."""
    counts = Counter(keys)
    repeated = [key for key in keys if counts[key] > 1]
    if not repeated:
        return None
    request_id, record_index = repeated[0]
    hint = (
        "a request that sent several records needs a record_index column giving each record's "
        "position in the request (0, 1, ...); without it every outcome is taken as record 0"
        if not has_index
        else "each predicted record has one outcome"
    )
    return (
        f"{len(repeated)} outcome rows share their (request_id, record_index) with another row, "
        f"e.g. request_id {request_id} record_index {record_index} "
        f"({counts[repeated[0]]} rows): {hint}"
    )


def _unknown_labels(actual: pd.Series, classes: list | None, empty: set[int]) -> str | None:
    """Actual labels that are not among the declared classes: stored, they would only be left
    out of live metrics later."""
    if not classes:
        return None
    allowed = {label_text(c) for c in classes}
    labels = [label_text(a) for a in actual]
    rows = [row for row, label in enumerate(labels) if label not in allowed and row not in empty]
    if not rows:
        return None
    unknown = Counter(labels[row] for row in rows)
    return (
        f"{len(rows)} outcomes (rows {rows[:EXAMPLES]}, {COUNTED}) have an actual label "
        f"that is not among data.target_classes {list(classes)}, e.g. "
        f"{', '.join(repr(label) for label, _n in unknown.most_common(EXAMPLES))}: "
        "write the labels as the training data does"
    )


def _out_of_bounds(actual: pd.Series, bounds: tuple | None) -> str | None:
    """Actual values outside the target's data.bounds, as make data refuses them."""
    if not bounds:
        return None
    values = pd.to_numeric(actual, errors="coerce")
    if not (outside := outside_bounds(values, bounds)).any():
        return None
    rows = np.flatnonzero(outside).tolist()
    return (
        f"{len(rows)} outcomes (rows {rows[:EXAMPLES]}, {COUNTED}) have an actual value "
        f"that is not {bounds_text(*bounds)} (the target's data.bounds), e.g. "
        f"{', '.join(f'{v:g}' for v in values[outside].head(EXAMPLES))}: fix them, or "
        "widen data.bounds"
    )


def _not_numbers(frame: pd.DataFrame, values: list, empty: set[int]) -> str | None:
    """A regression's actual values that are not finite numbers."""
    rows = [row for row, value in enumerate(values) if value is None and row not in empty]
    if not rows:
        return None
    first = rows[0]
    return (
        f"{len(rows)} outcome rows (rows {rows[:EXAMPLES]}, {COUNTED}) have an actual that is "
        f"not a finite number, e.g. row {first} (request_id {frame['request_id'].iloc[first]}) "
        f"has {plain(frame['actual'].iloc[first])!r}: a regression model's actual values must be "
        "finite numbers"
    )


def _number(value) -> float | None:
    """The value as a float when it is a finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass
class Loaded:
    """What loading a set of outcomes did."""

    rows: int  # outcomes in the input
    new: int  # not stored before
    matched: int  # outcomes whose (request_id, record_index) is a logged prediction
    unmatched: list[tuple[str, int]] = field(default_factory=list)  # the others' keys


def load(
    engine: sa.Engine,
    frame: pd.DataFrame,
    task: str | None = None,
    classes: list | None = None,
    bounds: tuple | None = None,
) -> Loaded:
    """Insert outcomes, replacing the actual value of ones stored before (a correction); count
    those matching a logged prediction.

    Outcomes that match none are stored all the same (the prediction may still be spooled by
    the service, waiting for the database), but only matched ones count in live metrics.
    """
    rows = outcome_rows(frame, task, classes, bounds)
    create_tables(engine)
    dialect = engine.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    with engine.begin() as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(outcomes)).scalar_one()
        if rows:
            upsert = insert(outcomes)
            replaced = {c: upsert.excluded[c] for c in ("actual", "actual_value", "recorded_at")}
            key = ["request_id", "record_index"]
            conn.execute(upsert.on_conflict_do_update(index_elements=key, set_=replaced), rows)
        after = conn.execute(sa.select(sa.func.count()).select_from(outcomes)).scalar_one()
        logged = _logged_keys(conn, sorted({row["request_id"] for row in rows}))
    keys = [(row["request_id"], row["record_index"]) for row in rows]
    unmatched = [key for key in keys if key not in logged]
    return Loaded(len(rows), int(after - before), len(rows) - len(unmatched), unmatched)


def _logged_keys(conn, request_ids: list[str]) -> set[tuple[str, int]]:
    """The (request_id, record_index) keys of the prediction log among these request ids."""
    found: set[tuple[str, int]] = set()
    for low in range(0, len(request_ids), LOOKUP_CHUNK):
        chunk = request_ids[low : low + LOOKUP_CHUNK]
        query = sa.select(log_table.c.request_id, log_table.c.record_index).where(
            log_table.c.request_id.in_(chunk)
        )
        found |= {(str(r), int(i)) for r, i in conn.execute(query)}
    return found


def store_outcomes(engine: sa.Engine, frame: pd.DataFrame, task: str | None = None) -> int:
    """Insert outcomes, replacing ones stored before; return how many were new."""
    return load(engine, frame, task).new
