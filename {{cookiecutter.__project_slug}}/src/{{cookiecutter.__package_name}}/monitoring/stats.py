"""Summary statistics of the prediction log, computed as SQL inside the database.

The same SQLAlchemy expressions compile for SQLite and PostgreSQL; Python only ever receives
aggregates (counts, moments, quantile boundaries), so memory stays flat as the log grows.
"""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import sqlalchemy as sa

from .tables import prediction_log as log_table

QUANTILES = (5, 25, 50, 75, 95)


def in_window(start: datetime, end: datetime, version: str | None = None):
    """The WHERE clause selecting one window (and optionally one model version)."""
    clause = sa.and_(log_table.c.logged_at >= start, log_table.c.logged_at < end)
    return clause if version is None else sa.and_(clause, log_table.c.model_version == version)


def numeric_value(name: str):
    """A feature of the JSON `features` column, as a float."""
    return log_table.c.features[name].as_float()


def text_value(name: str):
    """A feature of the JSON `features` column, as text."""
    return log_table.c.features[name].as_string()


def versions(conn, where) -> dict[str, int]:
    """Records per model version."""
    query = (
        sa.select(log_table.c.model_version, sa.func.count())
        .where(where)
        .group_by(log_table.c.model_version)
    )
    return {str(v): int(n) for v, n in conn.execute(query)}


def logged_features(conn, where) -> set[str]:
    """Feature names present in the newest and oldest record of the window."""
    names: set[str] = set()
    for order in (log_table.c.logged_at.asc(), log_table.c.logged_at.desc()):
        row = conn.execute(
            sa.select(log_table.c.features).where(where).order_by(order).limit(1)
        ).first()
        names |= set(row[0]) if row and isinstance(row[0], dict) else set()
    return names


def moments(conn, expr, where) -> dict[str, float | int | None]:
    """Count, missing rate, mean, standard deviation, min and max of an expression.

    Two passes: the range, then the mean and mean square of the values centred on the middle of
    the range and divided by its half-width, so each lies in [-1, 1]. Sums of the raw values
    and their squares overflow for any value beyond about 1e154 (SQLite then returns inf,
    PostgreSQL raises "value out of range"); the scaled ones cannot, and centring keeps the
    variance accurate for values far from zero.
    """
    total, present, low, high = conn.execute(
        sa.select(sa.func.count(), sa.func.count(expr), sa.func.min(expr), sa.func.max(expr)).where(
            where
        )
    ).one()
    summary = {
        "count": int(total),
        "missing_rate": 1 - present / total if total else None,
        "mean": None,
        "std": None,
        "min": low,
        "max": high,
    }
    if not present:
        return summary
    low, high = float(low), float(high)
    centre, half = low / 2 + high / 2, high / 2 - low / 2  # halves first: no overflow
    if not half > 0:  # one distinct value
        return {**summary, "mean": low, "std": 0.0}
    scaled = (_safe(conn, expr) - _safe(conn, centre)) / _safe(conn, half)
    mean, square = conn.execute(
        sa.select(sa.func.avg(scaled), sa.func.avg(scaled * scaled)).where(where)
    ).one()
    mean, square = float(mean), float(square)
    return {
        **summary,
        # Rounding may step just outside the range the values span.
        "mean": min(max(centre + half * mean, low), high),
        "std": half * math.sqrt(max(square - mean * mean, 0.0)),
    }


def _safe(conn, value):
    """An expression for arithmetic that cannot fail: PostgreSQL raises on a double precision
    product or quotient that overflows or underflows (1e-200 squared), NUMERIC never does.
    SQLite's REAL never raises (inf or 0 instead), and the scaling keeps it in range."""
    if conn.dialect.name != "postgresql":
        return value if isinstance(value, sa.ColumnElement) else sa.literal(value, sa.Float)
    return sa.cast(value if isinstance(value, sa.ColumnElement) else sa.literal(value), sa.Numeric)


def summary_from_sums(
    present: int, total: float, total_sq: float, low: float | None, high: float | None
) -> tuple[float | None, float | None]:
    """Mean and standard deviation from a sum and a sum of squares (the rollups keep those).

    Sums over huge values overflow to inf, and inf + -inf becomes NaN (SQLite returns NULL,
    read as 0): a mean that is not finite or lies outside [low, high] is None, and so is the
    standard deviation when the sum of squares is not finite.
    """
    if not present or low is None or high is None:
        return None, None
    with np.errstate(all="ignore"):
        mean = float(np.float64(total) / present)
        spread = float(np.float64(total_sq) / present - np.float64(mean) * mean)
    tolerance = 1e-9 * max(abs(low), abs(high))  # rounding of a sum of many values
    if not (math.isfinite(mean) and low - tolerance <= mean <= high + tolerance):
        return None, None
    mean = min(max(mean, low), high)
    if not (math.isfinite(total_sq) and math.isfinite(spread)):
        return mean, None
    return mean, math.sqrt(max(spread, 0.0))


def quantiles(conn, expr, where, points: tuple[int, ...] = QUANTILES) -> dict[str, float]:
    """Percentiles from one sort in the database: the largest value of each NTILE(100) tile."""
    ranked = (
        sa.select(expr.label("v"), sa.func.ntile(100).over(order_by=expr).label("t"))
        .where(sa.and_(where, expr.is_not(None)))
        .subquery()
    )
    query = sa.select(ranked.c.t, sa.func.max(ranked.c.v)).where(ranked.c.t.in_(points))
    upper = {int(t): float(v) for t, v in conn.execute(query.group_by(ranked.c.t))}
    return {f"p{q:02d}": upper[q] for q in points if q in upper}


def bin_counts(conn, expr, edges: list[float], where) -> list[int]:
    """Counts per bin of the reference edges (a value equal to an edge goes to the upper bin)."""
    if not edges:
        total = conn.execute(sa.select(sa.func.count(expr)).where(where)).scalar_one()
        return [int(total)]
    index = sa.case(*[(expr < edge, i) for i, edge in enumerate(edges)], else_=len(edges))
    query = sa.select(index.label("bin"), sa.func.count()).where(sa.and_(where, expr.is_not(None)))
    counts = [0] * (len(edges) + 1)
    for position, n in conn.execute(query.group_by(index)):
        counts[int(position)] = int(n)
    return counts


def category_counts(conn, expr, where) -> tuple[dict[str, int], int]:
    """Counts per category, and the number of missing values."""
    rows = conn.execute(sa.select(expr, sa.func.count()).where(where).group_by(expr)).all()
    counts = {str(v): int(n) for v, n in rows if v is not None}
    return counts, sum(int(n) for v, n in rows if v is None)


def latency_percentiles(conn, where) -> dict[str, float]:
    """p50, p95 and p99 of the per-record latency in milliseconds."""
    return quantiles(conn, log_table.c.latency_ms, where, (50, 95, 99))
