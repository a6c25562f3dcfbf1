"""Rollups: the prediction log's statistics, kept up to date as records are logged.

The prediction-log writer adds each batch it inserts to three small tables, in the transaction
that inserts the rows and counting only the rows that insert actually added (a replayed or
repeated batch adds nothing), per hour (`bucket`), model version and feature:

- `rollup_moments`: records, records holding the key, values present, sum, sum of squares, min
  and max;
- `rollup_bins` (numeric): counts per (`bin`, `cell`). `bin` is the bin of the training profile's
  edges, assigned exactly as `stats.bin_counts` does, so bin counts, PSI and the tests are the
  same as over the raw rows; `cell` divides an inner bin into SUBCELLS equal parts and, beyond
  the outer edges, grows geometrically (TAIL_STEPS cells per doubling of the distance), so
  percentiles are interpolated within one cell;
- `rollup_categories` (categorical): counts per category.

The service's outputs are rolled up the same way under names starting with "_": the positive
class's probability (binary classifiers), the predicted value (regression) or the predicted label
(other classifiers), and the latency; the outputs keep their reference bins only, as nobody
reads their percentiles. Only records of the writer's own model version are rolled up, on the
grid of that version's training profile, recorded in `rollup_grids`. Rows are written in key
order, so concurrent writers on PostgreSQL lock them in the same order and cannot deadlock.

`read()` sums the rollups of a window in SQL (a few thousand rows a day whatever the traffic);
`monitor()` uses them when they cover every record of the window and otherwise reads the raw
rows (sources.py).
"""

from __future__ import annotations

import json
import logging
import math
import operator
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from . import tables  # the positions in a prediction_log row
from .bulk import Bulk
from .tables import rollup_bins, rollup_categories, rollup_grids, rollup_moments

log = logging.getLogger(__name__)

BUCKET_SECONDS = 3600  # windows that use the rollups start and end on whole hours (UTC)
SUBCELLS = 16  # cells per inner bin of the training profile
TAIL_STEPS = 16  # cells per doubling of the distance beyond the outer edges (4.4 % wide)
TAIL_CELLS = 512  # per tail: up to 2**32 units beyond the outer edge; farther is one cell
LATENCY_UNIT_MS = 0.01
SUM_LIMIT = 1e300  # stored sums beyond this are +-inf (see _capped)
GRID_FORMAT = 1  # bump when the cell layout changes: older rollups then no longer match
LATENCY = "_latency_ms"
PROBABILITY = "_probability"
PREDICTION_VALUE = "_prediction_value"
PREDICTION = "_prediction"
_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}
_ABSENT = object()  # a feature missing from a record's dict (not just None)


@dataclass(frozen=True)
class Axis:
    """The cells of a numeric value: the training profile's bin edges, each inner bin cut into
    SUBCELLS equal cells, and beyond the outer edges TAIL_CELLS cells growing geometrically from
    `unit` (TAIL_STEPS per doubling of the distance). The reference edges are cell boundaries,
    so every cell lies in one reference bin. `fine=False` keeps the reference bins only.
    """

    edges: tuple[float, ...]
    unit: float
    fine: bool = True  # False: bins only (the outputs, whose percentiles nobody reads)
    boundaries: np.ndarray = field(init=False, repr=False, compare=False)
    bin_of: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        edges = np.asarray(self.edges, dtype=float)
        if self.fine:
            tail = self.unit * (2.0 ** (np.arange(1, TAIL_CELLS + 1) / TAIL_STEPS) - 1.0)
            low, high = (edges[0], edges[-1]) if len(edges) else (0.0, 0.0)
            parts = [low - tail[::-1], [low], edges, high + tail]
            parts += [a + (b - a) * np.arange(1, SUBCELLS) / SUBCELLS for a, b in pairwise(edges)]
            # Sorted and unique; the edges themselves are kept exactly.
            boundaries = np.unique(np.concatenate(parts))
        else:
            boundaries = edges
        # The reference bin of cell i, which holds [boundaries[i - 1], boundaries[i]).
        bin_of = np.searchsorted(edges, boundaries, side="right")
        object.__setattr__(self, "boundaries", boundaries)
        object.__setattr__(self, "bin_of", np.concatenate([[0], bin_of]).astype(np.int64))

    @classmethod
    def of(cls, edges: list[float], fine: bool = True, fallback: float = 1.0) -> Axis:
        """The axis of a profile's bin edges; tail cells start as wide as an average inner cell."""
        edges = tuple(float(e) for e in edges)
        unit = 0.0
        if len(edges) > 1:
            unit = (edges[-1] - edges[0]) / (SUBCELLS * (len(edges) - 1))
        elif edges:
            unit = abs(edges[0]) / 64
        if not (math.isfinite(unit) and unit > 0):
            unit = fallback
        return cls(edges, unit, fine)

    def cells(self, values: np.ndarray) -> np.ndarray:
        """The cell of each finite value (a value on a boundary goes to the upper cell, as a value
        on a reference edge goes to the upper bin in stats.bin_counts)."""
        return np.searchsorted(self.boundaries, values, side="right")

    def bounds(self, cell: int) -> tuple[float, float]:
        """The values a cell holds, [low, high)."""
        low = self.boundaries[cell - 1] if cell > 0 else -math.inf
        high = self.boundaries[cell] if cell < len(self.boundaries) else math.inf
        return float(low), float(high)


def _numeric(edges: list[float], fine: bool = True) -> dict[str, Any]:
    axis = Axis.of(edges, fine)
    return {"kind": "numeric", "edges": list(axis.edges), "unit": axis.unit, "fine": fine}


def grid(profile: dict) -> dict[str, dict[str, Any]]:
    """What a training profile rolls up: per name, its kind and, if numeric, its axis."""
    names: dict[str, dict[str, Any]] = {}
    for name, feature in profile["features"].items():
        numeric = feature["kind"] == "numeric"
        names[name] = _numeric(feature["bin_edges"]) if numeric else {"kind": "categorical"}
    prediction = profile.get("prediction") or {}
    if prediction.get("positive_proba"):
        names[PROBABILITY] = {
            **_numeric(prediction["positive_proba"]["bin_edges"], fine=False),
            "class": prediction["positive_class"],
        }
    elif prediction.get("kind") == "numeric":
        names[PREDICTION_VALUE] = _numeric(prediction["bin_edges"], fine=False)
    elif prediction:
        names[PREDICTION] = {"kind": "categorical"}
    names[LATENCY] = {"kind": "numeric", "edges": [], "unit": LATENCY_UNIT_MS, "fine": True}
    return names


def grid_text(names: dict[str, dict[str, Any]]) -> str:
    """The grid as stored in rollup_grids: rollups of two versions add up only if these match."""
    layout = {
        "format": GRID_FORMAT,
        "bucket_seconds": BUCKET_SECONDS,
        "subcells": SUBCELLS,
        "tail_steps": TAIL_STEPS,
        "tail_cells": TAIL_CELLS,
        "names": names,
    }
    return json.dumps(layout, sort_keys=True, separators=(",", ":"))


def axes(names: dict[str, dict[str, Any]]) -> dict[str, Axis]:
    """The axis of each numeric name of a grid."""
    return {
        name: Axis(tuple(entry["edges"]), entry["unit"], entry["fine"])
        for name, entry in names.items()
        if entry["kind"] == "numeric"
    }


def bucket_of(moment: datetime) -> int:
    """The start of a moment's bucket, in Unix seconds."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = int(moment.timestamp())
    return seconds - seconds % BUCKET_SECONDS


def aligned(moment: datetime) -> bool:
    """Whether a window bound falls on a bucket boundary."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp() % BUCKET_SECONDS == 0


class Rollup:
    """The writer's side: adds inserted rows of one model version to the rollup tables."""

    def __init__(self, model_version: str, profile: dict) -> None:
        self.version = str(model_version)
        self.names = grid(profile)
        self.text = grid_text(self.names)
        self.axes = axes(self.names)
        self.enabled, self._verified = True, False
        self._statements: dict[str, tuple] = {}
        features = profile["features"]
        self._numeric = [(n, self.axes[n]) for n in features if n in self.axes]
        self._categorical = [n for n in features if n not in self.axes]

    def add(self, connection, rows: list[tuple]) -> None:
        """Add rows just inserted (their own model version only) in the caller's transaction."""
        if not self.enabled:
            return
        mine = [row for row in rows if row[tables.MODEL_VERSION] == self.version]
        if not mine:
            return
        grids, moments, bins, categories = self._upserts(connection.dialect.name)
        connection.execute(grids, {"model_version": self.version, "grid": self.text})
        if not self._verified and not self._verify(connection):
            return
        moment_rows, bin_rows, category_rows = self.aggregate(mine)
        # Always in key order, so concurrent writers (PostgreSQL) lock rows in the same order.
        writes = ((moments, moment_rows), (bins, bin_rows), (categories, category_rows))
        for statement, params in writes:
            if params:
                statement(connection, params)

    def _verify(self, connection) -> bool:
        """Check that this version's stored grid is ours; if not, stop rolling up."""
        stored = connection.execute(
            sa.select(rollup_grids.c.grid).where(rollup_grids.c.model_version == self.version)
        ).scalar_one()
        self._verified = True
        if stored != self.text:
            self.enabled = False
            log.error(
                "prediction log: rollups of model version %s were written on another grid "
                "(another profile or code version); not rolling up, `make monitor` reads the "
                "raw log instead",
                self.version,
            )
        return self.enabled

    def aggregate(self, rows: list[tuple]) -> tuple[list, list, list]:
        """The upsert rows (moments, bins, categories) of a batch of prediction_log rows (tuples,
        tables.py), as tuples in key order."""
        first = bucket_of(rows[0][tables.LOGGED_AT])
        low = datetime.fromtimestamp(first, UTC)
        high = datetime.fromtimestamp(first + BUCKET_SECONDS, UTC)
        if all(low <= row[tables.LOGGED_AT] < high for row in rows):  # the usual case: one bucket
            by_bucket = {first: rows}
        else:
            by_bucket = {}
            for row in rows:
                by_bucket.setdefault(bucket_of(row[tables.LOGGED_AT]), []).append(row)
        moments, bins, categories = [], [], []
        for bucket in sorted(by_bucket):
            group = by_bucket[bucket]
            counts = _Batch(bucket, self.version, len(group), moments, bins, categories)
            features = [row[tables.FEATURES] for row in group]
            named = (
                [(name, axis, None) for name, axis in self._numeric]
                + [(name, None, None) for name in self._categorical]
                + self._outputs()
            )
            for name, axis, source in named:
                if source is None:
                    values = list(map(operator.methodcaller("get", name, _ABSENT), features))
                    keyed = len(group) - values.count(_ABSENT)
                    if keyed < len(group):
                        values = [None if v is _ABSENT else v for v in values]
                else:
                    values, keyed = source(group), len(group)
                if axis is None:
                    counts.categorical(name, values, keyed)
                else:
                    counts.numeric(name, axis, values, keyed)
        # Tuples in column order; sorted, they are in key order.
        return sorted(moments), sorted(bins), sorted(categories)

    def _outputs(self) -> list[tuple]:
        """The service's own outputs: (name, axis or None, values of a group of rows)."""
        outputs = [(LATENCY, self.axes[LATENCY], lambda g: [r[tables.LATENCY_MS] for r in g])]
        if PROBABILITY in self.names:
            label = self.names[PROBABILITY]["class"]
            outputs.append(
                (
                    PROBABILITY,
                    self.axes[PROBABILITY],
                    lambda g: [(r[tables.PROBABILITIES] or {}).get(label) for r in g],
                )
            )
        elif PREDICTION_VALUE in self.names:
            outputs.append(
                (
                    PREDICTION_VALUE,
                    self.axes[PREDICTION_VALUE],
                    lambda g: [r[tables.PREDICTION_VALUE] for r in g],
                )
            )
        elif PREDICTION in self.names:
            outputs.append((PREDICTION, None, lambda g: [r[tables.PREDICTION] for r in g]))
        return outputs

    def _upserts(self, dialect: str) -> tuple:
        """The four upserts, built once per dialect: grid (kept), moments, bins, categories.

        The last three take rows as tuples in table column order and go to the driver in bulk
        (see bulk.py): SQLAlchemy's per-row parameter handling would cost more than the
        database's own work on these few-column rows.
        """
        if dialect not in self._statements:
            insert = _INSERTS[dialect]
            grids = insert(rollup_grids).on_conflict_do_nothing(index_elements=["model_version"])
            stmt = insert(rollup_moments)
            new, old = stmt.excluded, rollup_moments.c
            moments = stmt.on_conflict_do_update(
                index_elements=["bucket", "model_version", "feature"],
                set_={
                    "records": old.records + new.records,
                    "keyed": old.keyed + new.keyed,
                    "present": old.present + new.present,
                    "total": old.total + new.total,
                    "total_sq": old.total_sq + new.total_sq,
                    "low": sa.case(
                        (new.low < old.low, new.low), else_=sa.func.coalesce(old.low, new.low)
                    ),
                    "high": sa.case(
                        (new.high > old.high, new.high), else_=sa.func.coalesce(old.high, new.high)
                    ),
                },
            )
            counted = []
            for table, key in ((rollup_bins, ["bin", "cell"]), (rollup_categories, ["category"])):
                stmt = insert(table)
                counted.append(
                    stmt.on_conflict_do_update(
                        index_elements=["bucket", "model_version", "feature", *key],
                        set_={"n": table.c.n + stmt.excluded.n},
                    )
                )
            self._statements[dialect] = (grids, *map(Bulk, (moments, *counted)))
        return self._statements[dialect]


@dataclass
class _Batch:
    """Collects the upsert parameters of one bucket of a batch."""

    bucket: int
    version: str
    records: int
    moments: list
    bins: list
    categories: list

    def _moments(self, name: str, keyed: int, present: int, **values) -> None:
        self.moments.append(
            (
                self.bucket,
                self.version,
                name,
                self.records,
                keyed,
                present,
                values.get("total", 0.0),
                values.get("total_sq", 0.0),
                values.get("low"),
                values.get("high"),
            )
        )

    def numeric(self, name: str, axis: Axis, values: list, keyed: int) -> None:
        try:
            array = np.array(values, dtype=float)  # None becomes NaN: missing
        except (TypeError, ValueError):
            array = np.array([_number(v) for v in values], dtype=float)
        finite = np.isfinite(array)
        if not finite.all():
            array = array[finite]
        if not array.size:
            self._moments(name, keyed, 0)
            return
        with np.errstate(over="ignore"):  # huge values sum to inf, as they would in SQL
            total, total_sq = _capped(float(array.sum())), _capped(float(np.dot(array, array)))
        self._moments(
            name,
            keyed,
            int(array.size),
            total=total,
            total_sq=total_sq,
            low=float(array.min()),
            high=float(array.max()),
        )
        counts = np.bincount(axis.cells(array))
        cells = np.flatnonzero(counts)
        head = (self.bucket, self.version, name)
        self.bins.extend(
            (*head, b, c, n)
            for b, c, n in zip(
                axis.bin_of[cells].tolist(), cells.tolist(), counts[cells].tolist(), strict=True
            )
        )

    def categorical(self, name: str, values: list, keyed: int) -> None:
        counts = Counter(values)
        missing = counts.pop(None, 0)
        merged: dict[str, int] = {}
        for value, n in counts.items():
            text = value if isinstance(value, str) else str(value)
            merged[text] = merged.get(text, 0) + n
        self._moments(name, keyed, len(values) - missing)
        self.categories.extend(
            (self.bucket, self.version, name, category, n) for category, n in merged.items()
        )


def _capped(total: float) -> float:
    """A sum, or +-inf once it nears the float limit: PostgreSQL refuses an upsert whose finite
    sums add up past it (SQLite gives inf), but adds to an infinite stored sum without complaint."""
    return total if abs(total) < SUM_LIMIT else math.copysign(math.inf, total)


def _number(value: Any) -> float:
    """A value as a float, NaN (missing) when it is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


@dataclass
class Moments:
    """Summed moments of one name over a window."""

    records: int = 0
    keyed: int = 0
    present: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    low: float | None = None
    high: float | None = None

    def add(self, other: Moments) -> Moments:
        """The moments of both."""
        lows = [v for v in (self.low, other.low) if v is not None]
        highs = [v for v in (self.high, other.high) if v is not None]
        return Moments(
            self.records + other.records,
            self.keyed + other.keyed,
            self.present + other.present,
            self.total + other.total,
            self.total_sq + other.total_sq,
            min(lows) if lows else None,
            max(highs) if highs else None,
        )


@dataclass
class Window:
    """The rollups of a window, summed in the database, by (model version, name)."""

    moments: dict[tuple[str, str], Moments]
    cells: dict[tuple[str, str], dict[tuple[int, int], int]]
    categories: dict[tuple[str, str], dict[str, int]]
    grids: dict[str, str]

    @property
    def records(self) -> dict[str, int]:
        """Records rolled up, per model version."""
        return {v: m.records for (v, name), m in self.moments.items() if name == LATENCY}


def _sum(value) -> float:
    """A summed total as read back: NULL (inf + -inf in SQLite) is NaN."""
    return math.nan if value is None else float(value)


def seconds(moment: datetime) -> int:
    """A datetime as Unix seconds (naive ones are UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def read(conn, start: datetime, end: datetime) -> Window:
    """Sum the rollups of the buckets in [start, end) with GROUP BY, in the database."""
    low, high = seconds(start), seconds(end)

    def within(table):
        return sa.and_(table.c.bucket >= low, table.c.bucket < high)

    m = rollup_moments.c
    moments = {
        # A NULL sum is SQLite's inf + -inf: unknown (NaN), not 0.
        (str(v), str(name)): Moments(int(r), int(k), int(p), _sum(t), _sum(s), lo, hi)
        for v, name, r, k, p, t, s, lo, hi in conn.execute(
            sa.select(
                m.model_version,
                m.feature,
                sa.func.sum(m.records),
                sa.func.sum(m.keyed),
                sa.func.sum(m.present),
                sa.func.sum(m.total),
                sa.func.sum(m.total_sq),
                sa.func.min(m.low),
                sa.func.max(m.high),
            )
            .where(within(rollup_moments))
            .group_by(m.model_version, m.feature)
        )
    }
    b = rollup_bins.c
    cells: dict[tuple[str, str], dict[tuple[int, int], int]] = {}
    for v, name, bin_, cell, n in conn.execute(
        sa.select(b.model_version, b.feature, b.bin, b.cell, sa.func.sum(b.n))
        .where(within(rollup_bins))
        .group_by(b.model_version, b.feature, b.bin, b.cell)
    ):
        cells.setdefault((str(v), str(name)), {})[(int(bin_), int(cell))] = int(n)
    c = rollup_categories.c
    categories: dict[tuple[str, str], dict[str, int]] = {}
    for v, name, category, n in conn.execute(
        sa.select(c.model_version, c.feature, c.category, sa.func.sum(c.n))
        .where(within(rollup_categories))
        .group_by(c.model_version, c.feature, c.category)
    ):
        categories.setdefault((str(v), str(name)), {})[str(category)] = int(n)
    versions = sorted({v for v, _name in moments})
    grids = {
        str(v): str(text)
        for v, text in conn.execute(
            sa.select(rollup_grids.c.model_version, rollup_grids.c.grid).where(
                rollup_grids.c.model_version.in_(versions)
            )
        )
    }
    return Window(moments, cells, categories, grids)


def quantiles(
    axis: Axis, cells: dict[tuple[int, int], int], low: float, high: float, points: tuple[int, ...]
) -> dict[str, float]:
    """Percentiles as stats.quantiles defines them (the last value of each NTILE(100) tile),
    interpolated within the cell holding that value: off by less than one cell."""
    ordered = sorted(cells.items())
    total = sum(n for _cell, n in ordered)
    size, extra = divmod(total, 100)
    result: dict[str, float] = {}
    position, below = 0, 0
    for q in sorted(points):
        if q > total:  # fewer rows than tiles: that tile does not exist
            continue
        rank = q * (size + 1) if q <= extra else extra * (size + 1) + (q - extra) * size
        while below + ordered[position][1] < rank:
            below += ordered[position][1]
            position += 1
        (_bin, cell), n = ordered[position]
        start, stop = axis.bounds(cell)
        start, stop = max(start, low), min(stop, high)
        result[f"p{q:02d}"] = float(start + (stop - start) * (rank - below) / n)
    return result
