"""Micro-batching: concurrent requests share one model call.

Requests wait in a queue; a single worker takes everything queued (up to `max_rows` rows) and
predicts it in one call on a dedicated thread. Nothing waits on purpose: at low load each
request is predicted alone, and under load the requests that arrive during one call form the
next batch, so one-row overheads (DataFrame construction, input validation) are paid per batch.

A batch of at most `inline_rows` rows is predicted on the event loop itself, skipping the
thread hop (and the wait for the GIL it brings): only for a prediction whose time is known to be
short, such as the service's checked numpy fast path on a small batch.

When a batch of several requests fails, each request is predicted again by itself, so a record
that makes the model raise fails its own request only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)


class MicroBatcher:
    """Collect row lists from concurrent callers and predict them together."""

    def __init__(
        self, predict: Callable[[list[dict]], list[Any]], max_rows: int, inline_rows: int = 0
    ) -> None:
        self._predict = predict
        self._max_rows, self.inline_rows = max_rows, inline_rows
        self._queue: asyncio.Queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the worker after the call in progress."""
        if self._worker:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def submit(self, rows: list[dict]) -> list[Any]:
        """Queue rows and wait for their predictions."""
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((rows, future))
        return await future

    def _take(self, first) -> list:
        """The first waiting request plus whatever else is queued, up to max_rows rows."""
        batch, rows = [first], len(first[0])
        while rows < self._max_rows and not self._queue.empty():
            item = self._queue.get_nowait()
            batch.append(item)
            rows += len(item[0])
        return [item for item in batch if not item[1].done()]

    async def _run(self) -> None:
        """Predict batches until cancelled."""
        while True:
            batch = self._take(await self._queue.get())
            if not batch:
                continue
            try:
                results = await self._call([row for item, _ in batch for row in item])
            except Exception as err:
                if len(batch) == 1:
                    _fail(batch[0][1], err)
                else:  # one request's rows made the model fail: only that request gets the error
                    for item in batch:
                        await self._alone(item)
                continue
            self._deliver(batch, results)

    async def _call(self, rows: list[dict]) -> list[Any]:
        """Predict rows: on the event loop when few enough, else on the prediction thread."""
        if len(rows) <= self.inline_rows:
            return self._predict(rows)
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._predict, rows)

    async def _alone(self, item: tuple) -> None:
        """Predict one request's rows by themselves; its caller gets the results or the error."""
        rows, future = item
        try:
            results = await self._call(rows)
        except Exception as err:
            _fail(future, err)
            return
        self._deliver([item], results)

    @staticmethod
    def _deliver(batch: list, results: list[Any]) -> None:
        """Hand each caller its slice of the results."""
        start = 0
        for rows, future in batch:
            if not future.done():
                future.set_result(results[start : start + len(rows)])
            start += len(rows)


def _fail(future: asyncio.Future, err: Exception) -> None:
    """Give a waiting caller the error (a caller that gave up has no use for it)."""
    if not future.done():
        future.set_exception(err)
