"""Where a monitoring pass reads its statistics: the rollups when they cover the window, else
the raw prediction_log rows.

Both answer the same questions with SQL in the database. The raw rows are the reference: exact
percentiles, any window, any writer. The rollups give the same counts, moments and bin counts
(so the same drift verdicts) in milliseconds, with percentiles interpolated within one rollup
cell. `choose()` takes the rollups only when all of these hold, and otherwise says why not:

- `exact` is not asked for;
- the window starts and ends on whole hours (UTC), the rollup buckets;
- the rollups count exactly as many records as the log holds in the window (records logged
  before rollups existed, by another tool, or replayed for another model version are not
  rolled up);
- every model version in the window was rolled up on the champion's grid (its training
  profile's bin edges): a window that mixes versions with different profiles reads the rows.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from . import rollups
from . import stats as sql
from .tables import prediction_log as log_table
from .tables import rollup_moments

RAW = "prediction_log"
ROLLUPS = "rollups"


class RawLog:
    """Statistics computed over the prediction_log rows of the window (the reference)."""

    name = RAW

    def __init__(self, conn, start: datetime, end: datetime, note: str | None = None) -> None:
        self.conn, self.start, self.end, self.note = conn, start, end, note
        self.where = sql.in_window(start, end)

    def records(self) -> int:
        """Records in the window (counted on the logged_at index)."""
        query = sa.select(sa.func.count()).select_from(log_table).where(self.where)
        return int(self.conn.execute(query).scalar_one())

    def versions(self) -> dict[str, int]:
        """Records per model version."""
        return sql.versions(self.conn, self.where)

    def features(self) -> set[str]:
        """Feature names logged (in the newest and oldest record)."""
        return sql.logged_features(self.conn, self.where)

    def numeric(self, name: str, edges: list[float]) -> tuple[dict, list[int]]:
        """Moments and percentiles of a numeric feature, and its counts per reference bin."""
        expr = sql.numeric_value(name)
        summary = {
            **sql.moments(self.conn, expr, self.where),
            "quantiles": sql.quantiles(self.conn, expr, self.where),
        }
        return summary, sql.bin_counts(self.conn, expr, edges, self.where)

    def categorical(self, name: str) -> tuple[dict[str, int], int]:
        """Counts per category of a categorical feature, and missing values."""
        return sql.category_counts(self.conn, sql.text_value(name), self.where)

    def probability_counts(self, label: str, edges: list[float], version: str) -> list[int]:
        """Counts per reference bin of one class's probability, for one model version."""
        expr = log_table.c.probabilities[label].as_float()
        return sql.bin_counts(self.conn, expr, edges, self._of(version))

    def value_counts(self, edges: list[float], version: str) -> list[int]:
        """Counts per reference bin of the predicted value, for one model version."""
        return sql.bin_counts(self.conn, log_table.c.prediction_value, edges, self._of(version))

    def label_counts(self, version: str) -> dict[str, int]:
        """Counts per predicted label, for one model version."""
        return sql.category_counts(self.conn, log_table.c.prediction, self._of(version))[0]

    def latency(self) -> dict[str, float]:
        """Latency percentiles."""
        return sql.latency_percentiles(self.conn, self.where)

    def _of(self, version: str):
        return sql.in_window(self.start, self.end, version)


class Rollups:
    """The same statistics from the rollups of the window, summed in SQL by rollups.read()."""

    name = ROLLUPS
    note = None

    def __init__(self, window: rollups.Window, grid: dict) -> None:
        self.window = window
        self.axes = rollups.axes(grid)

    def versions(self) -> dict[str, int]:
        """Records per model version."""
        return {v: n for v, n in self.window.records.items() if n}

    def features(self) -> set[str]:
        """Feature names held by at least one record."""
        return {
            name
            for (_v, name), moments in self.window.moments.items()
            if moments.keyed and not name.startswith("_")
        }

    def _moments(self, name: str, version: str | None = None) -> rollups.Moments:
        total = rollups.Moments()
        for (v, n), moments in self.window.moments.items():
            if n == name and version in (None, v):
                total = total.add(moments)
        return total

    def _merged(self, table: dict, name: str, version: str | None = None) -> dict:
        merged: dict = {}
        for (v, n), counts in table.items():
            if n == name and version in (None, v):
                for key, count in counts.items():
                    merged[key] = merged.get(key, 0) + count
        return merged

    def _bins(self, name: str, edges: list[float], version: str | None = None) -> list[int]:
        if tuple(edges) != self.axes[name].edges:  # choose() makes sure this never happens
            raise ValueError(f"rollups of {name} use other bin edges than the profile")
        counts = [0] * (len(edges) + 1)
        for (bin_, _cell), n in self._merged(self.window.cells, name, version).items():
            counts[bin_] += n
        return counts

    def numeric(self, name: str, edges: list[float]) -> tuple[dict, list[int]]:
        """Moments and percentiles of a numeric feature, and its counts per reference bin."""
        m = self._moments(name)
        # None where the stored sums overflowed (values beyond ~1e154): monitor() says so.
        mean, std = sql.summary_from_sums(m.present, m.total, m.total_sq, m.low, m.high)
        cells = self._merged(self.window.cells, name)
        summary = {
            "count": m.records,
            "missing_rate": 1 - m.present / m.records if m.records else None,
            "mean": mean,
            "std": std,
            "min": m.low,
            "max": m.high,
            "quantiles": rollups.quantiles(self.axes[name], cells, m.low, m.high, sql.QUANTILES)
            if m.present
            else {},
        }
        return summary, self._bins(name, edges)

    def categorical(self, name: str) -> tuple[dict[str, int], int]:
        """Counts per category of a categorical feature, and missing values."""
        m = self._moments(name)
        return self._merged(self.window.categories, name), m.records - m.present

    def probability_counts(self, label: str, edges: list[float], version: str) -> list[int]:
        """Counts per reference bin of the positive class's probability, for one version."""
        return self._bins(rollups.PROBABILITY, edges, version)

    def value_counts(self, edges: list[float], version: str) -> list[int]:
        """Counts per reference bin of the predicted value, for one model version."""
        return self._bins(rollups.PREDICTION_VALUE, edges, version)

    def label_counts(self, version: str) -> dict[str, int]:
        """Counts per predicted label, for one model version."""
        return self._merged(self.window.categories, rollups.PREDICTION, version)

    def latency(self) -> dict[str, float]:
        """Latency percentiles p50, p95, p99, interpolated within a 4.4 % wide cell."""
        m = self._moments(rollups.LATENCY)
        cells = self._merged(self.window.cells, rollups.LATENCY)
        if not m.present:
            return {}
        axis = self.axes[rollups.LATENCY]
        return rollups.quantiles(axis, cells, m.low, m.high, (50, 95, 99))


def choose(conn, champion: dict, start: datetime, end: datetime, exact: bool = False):
    """The rollups when they stand for every record of the window, else the raw rows."""
    raw = RawLog(conn, start, end)
    if exact:
        return raw
    if not (rollups.aligned(start) and rollups.aligned(end)):
        raw.note = (
            "the window does not start and end on whole hours (UTC), the rollup buckets: "
            "statistics computed from the raw log rows"
        )
        return raw
    if not sa.inspect(conn).has_table(rollup_moments.name):
        return raw
    window = rollups.read(conn, start, end)
    rolled, logged = sum(window.records.values()), raw.records()
    if logged > rolled:
        raw.note = (
            f"{logged - rolled} of the {logged} records in the window have no rollup (logged "
            "before rollups existed, by another tool, or replayed for another model version): "
            "statistics computed from the raw log rows"
        )
        return raw
    if rolled > logged:
        raw.note = (
            f"the rollups count {rolled} records in the window but the log holds {logged} "
            "(rows deleted from the log?): statistics computed from the raw log rows"
        )
        return raw
    grid = rollups.grid(champion["profile"])
    expected = rollups.grid_text(grid)
    other = sorted(v for v in window.records if window.grids.get(v) != expected)
    if other:
        raw.note = (
            f"model version(s) {', '.join(f'v{v}' for v in other)} were rolled up on another "
            f"grid than champion v{champion['version']}'s training profile: statistics computed "
            "from the raw log rows"
        )
        return raw
    return Rollups(window, grid)
