"""Ground truth that arrives after the prediction, stored beside the prediction log."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pandas as pd
import sqlalchemy as sa

from ..errors import PipelineError
from .tables import metadata, outcomes

REQUIRED = ("request_id", "actual")


def outcome_rows(frame: pd.DataFrame) -> list[dict]:
    """Rows for the outcomes table, refusing a frame without the required columns."""
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise PipelineError(
            f"outcomes need columns {list(REQUIRED)} (and optionally record_index); "
            f"missing {missing}"
        )
    if frame["request_id"].isna().any() or frame["actual"].isna().any():
        raise PipelineError("outcomes have empty request_id or actual values")
    now = datetime.now(UTC)
    index = frame["record_index"] if "record_index" in frame.columns else pd.Series(0, frame.index)
    return [
        {
            "request_id": str(r),
            "record_index": int(i),
            "actual": _text(a),
            "actual_value": _number(a),
            "recorded_at": now,
        }
        for r, i, a in zip(frame["request_id"], index, frame["actual"], strict=True)
    ]


def _text(value) -> str:
    """The label as the service logs predictions: integers without a decimal point."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _number(value) -> float | None:
    """The value as a float when it is a finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def store_outcomes(engine: sa.Engine, frame: pd.DataFrame) -> int:
    """Insert outcomes, ignoring ones already stored; return how many were new."""
    rows = outcome_rows(frame)
    metadata.create_all(engine)
    dialect = engine.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    with engine.begin() as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(outcomes)).scalar_one()
        if rows:
            conn.execute(insert(outcomes).on_conflict_do_nothing(), rows)
        after = conn.execute(sa.select(sa.func.count()).select_from(outcomes)).scalar_one()
    return int(after - before)
