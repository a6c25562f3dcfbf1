"""Write many rows with few statements, below SQLAlchemy's per-row parameter handling.

The prediction-log writer is a thread of the serving process. Python's sqlite3 releases the GIL
around every statement step, and an executemany steps once per row: a 500-row batch handed the
GIL to the event loop and waited to get it back 500 times, slowing every request while the
writer had work. On SQLite (positional parameters) a batch is therefore sent as INSERT
statements of many VALUES groups, one step each; on PostgreSQL, whose driver pipelines an
executemany, as one executemany. Either way the statement is compiled once per dialect by
SQLAlchemy and the rows go to the driver as tuples, converted by the columns' bind processors (on
SQLite a column at a time, as a slice of the flat parameter list).
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from itertools import chain

from sqlalchemy import DateTime

# SQLite allows 32766 parameters per statement (since 3.32); stay well below.
MAX_PARAMETERS = 8000


class Bulk:
    """An INSERT (or upsert) of whole rows, in table column order, compiled once per dialect."""

    def __init__(self, statement) -> None:
        self.statement = statement
        self.columns = list(statement.table.columns)
        self._compiled: dict[str, tuple] = {}

    def _for(self, dialect) -> tuple:
        """(SQL text, parameter order or None for named parameters, bind processors)."""
        if dialect.name not in self._compiled:
            compiled = self.statement.compile(dialect=dialect)
            keys = [column.key for column in self.columns]
            order = [keys.index(name) for name in compiled.positiontup or []]
            processors = [_processor(column.type, dialect) for column in self.columns]
            named = not compiled.positional
            self._compiled[dialect.name] = (str(compiled), None if named else order, processors)
        return self._compiled[dialect.name]

    def __call__(self, connection, rows: list[tuple]) -> int:
        """Write rows, tuples of Python values in column order, converted by the columns' bind
        processors; the number of rows the database took."""
        text, order, processors = self._for(connection.dialect)
        width = len(self.columns)
        if order is None:  # named parameters (psycopg): one pipelined executemany
            keys = [column.key for column in self.columns]
            params = [dict(zip(keys, row, strict=True)) for row in _convert(rows, processors)]
            return connection.exec_driver_sql(text, params).rowcount
        if order != list(range(width)):
            rows = [tuple(row[i] for i in order) for row in rows]
            processors, width = [processors[i] for i in order], len(order)
        per_statement = max(1, MAX_PARAMETERS // width)
        written = 0
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            flat = list(chain.from_iterable(chunk))
            if len(flat) != width * len(chunk):
                raise ValueError(f"rows of {self.statement.table.name} need {width} values each")
            for index, process in enumerate(processors):
                if process:  # a column of the flat list is every width-th value
                    flat[index::width] = map(process, flat[index::width])
            written += connection.exec_driver_sql(_many(text, len(chunk)), tuple(flat)).rowcount
        return written


def _processor(type_, dialect):
    """A column type's bind processor; for SQLite's DATETIME, the same text at half the cost (a
    prediction-log row has one)."""
    if dialect.name == "sqlite" and isinstance(type_, DateTime):
        return _sqlite_datetime
    return type_.dialect_impl(dialect).bind_processor(dialect)


def _sqlite_datetime(value):
    """A datetime as SQLAlchemy stores it in SQLite, "2026-05-01 12:00:00.000000", its wall time
    whatever its zone (the writer gives UTC)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise TypeError(f"SQLite DateTime takes Python datetime objects, not {value!r}")
    # A tuple to %: half the time of an f-string here, and of SQLAlchemy's dict to %.
    return "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (  # noqa: UP031
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
    )


def _convert(rows: list[tuple], processors: list) -> list[tuple]:
    """Rows with each value converted by its column's bind processor, where it has one."""
    if not any(processors):
        return rows
    return [tuple(p(v) if p else v for p, v in zip(processors, row, strict=True)) for row in rows]


@lru_cache(maxsize=64)
def _many(text: str, rows: int) -> str:
    """The statement with its one VALUES group repeated for `rows` rows."""
    head, _, tail = text.partition(" VALUES (")
    group, _, rest = tail.partition(")")
    return head + " VALUES " + ", ".join([f"({group})"] * rows) + rest
