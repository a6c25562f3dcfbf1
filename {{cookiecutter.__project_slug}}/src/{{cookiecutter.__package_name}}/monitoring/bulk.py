"""Write many rows with few statements, below SQLAlchemy's per-row parameter handling.

The prediction-log writer is a thread of the serving process. Python's sqlite3 releases the GIL
around every statement step, and an executemany steps once per row: a 500-row batch handed the
GIL to the event loop and waited to get it back 500 times, slowing every request while the
writer had work. On SQLite (positional parameters) a batch is therefore sent as INSERT
statements of many VALUES groups, one step each; on PostgreSQL, whose driver pipelines an
executemany, as one executemany. Either way the statement is compiled once per dialect by
SQLAlchemy and the rows go to the driver as tuples.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

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
            processors = [
                column.type.dialect_impl(dialect).bind_processor(dialect) for column in self.columns
            ]
            named = not compiled.positional
            self._compiled[dialect.name] = (str(compiled), None if named else order, processors)
        return self._compiled[dialect.name]

    def tuples(self, connection, rows: list[dict[str, Any]]) -> list[tuple]:
        """Rows as dicts (Python values) to tuples of driver values, through the column types."""
        _, _, processors = self._for(connection.dialect)
        keys = [(c.key, process) for c, process in zip(self.columns, processors, strict=True)]
        return [tuple(p(row[k]) if p else row[k] for k, p in keys) for row in rows]

    def __call__(self, connection, rows: list[tuple]) -> int:
        """Write rows given as tuples of driver values; the number of rows the database took."""
        text, order, _ = self._for(connection.dialect)
        if order is None:  # named parameters (psycopg): one pipelined executemany
            keys = [column.key for column in self.columns]
            params = [dict(zip(keys, row, strict=True)) for row in rows]
            return connection.exec_driver_sql(text, params).rowcount
        if order != list(range(len(self.columns))):
            rows = [tuple(row[i] for i in order) for row in rows]
        per_statement = max(1, MAX_PARAMETERS // len(order))
        written = 0
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            flat = tuple(value for row in chunk for value in row)
            written += connection.exec_driver_sql(_many(text, len(chunk)), flat).rowcount
        return written


@lru_cache(maxsize=64)
def _many(text: str, rows: int) -> str:
    """The statement with its one VALUES group repeated for `rows` rows."""
    head, _, tail = text.partition(" VALUES (")
    group, _, rest = tail.partition(")")
    return head + " VALUES " + ", ".join([f"({group})"] * rows) + rest
