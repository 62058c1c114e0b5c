"""What the API reads from its own database on every request (API tokens, workflow versions,
whether an organization has status webhooks), kept for ``ttl`` seconds.

Three things a plain TTL map gets wrong under load, each of which cost the database and the
request path:

* **One load per key at a time.** When an entry expires, every request in flight for that
  key used to miss at once and each ran its own query in a thread (32 concurrent creates
  made about 70 queries and started threads every few seconds). Misses now wait on the one
  load already running for their key.
* **Refreshed ahead of expiry.** A key read in the second half of its ``ttl`` is reloaded in
  the background while requests keep the value they have, so a hot key never makes a
  request wait on the database. A value is never used longer than ``ttl`` after the load
  that read it began, so a revoked token or an edited workflow still applies within ``ttl``.
* **A database outage.** While the database does not answer, the value last loaded within
  ``stale`` seconds is used (when ``keep`` accepts it); otherwise the error propagates, and
  the request is a 503.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import anyio.to_thread
import structlog

from tollway.outage import DATABASE_DOWN

T = TypeVar("T")
log = structlog.get_logger("tollway.api")


class ReadCache(Generic[T]):
    def __init__(
        self,
        ttl: float,
        stale: float = 0.0,
        keep: Callable[[T], bool] = lambda value: True,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        on_load: Callable[[], None] | None = None,
    ) -> None:
        self._clock = clock
        self._on_load = on_load
        self._ttl = ttl
        self._stale = stale
        self._keep = keep
        self._max = max_entries
        self._entries: dict[str, tuple[float, T]] = {}  # key -> (when its load began, value)
        self._loads: dict[str, asyncio.Task[T]] = {}

    async def get(self, key: str, load: Callable[[], T]) -> T:
        """The value for ``key``; ``load`` reads it (blocking: it runs in a thread)."""
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None:
            age = now - entry[0]
            if age < self._ttl:
                if age >= self._ttl / 2 and self._running(key) is None:
                    self._start(key, load, ahead=True)  # this request keeps its value
                return entry[1]
        task = self._running(key) or self._start(key, load, ahead=False)
        try:
            # Shielded: a request that goes away does not cancel the load others wait on.
            return await asyncio.shield(task)
        except DATABASE_DOWN:
            entry = self._entries.get(key)  # the last value read, from any load
            if entry is not None and now - entry[0] <= self._stale and self._keep(entry[1]):
                return entry[1]
            raise

    def _running(self, key: str) -> asyncio.Task[T] | None:
        task = self._loads.get(key)
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            return None  # (a load left behind by a closed loop, as between tests)
        return task

    def _start(self, key: str, load: Callable[[], T], *, ahead: bool) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(self._load(key, load))
        self._loads[key] = task
        task.add_done_callback(self._refreshed if ahead else _retrieved)
        return task

    async def _load(self, key: str, load: Callable[[], T]) -> T:
        began = self._clock()
        if self._on_load is not None:
            self._on_load()
        try:
            value = await anyio.to_thread.run_sync(load)
        finally:
            if self._loads.get(key) is asyncio.current_task():
                del self._loads[key]
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[key] = (began, value)
        return value

    @staticmethod
    def _refreshed(task: asyncio.Task[T]) -> None:
        """A refresh ahead has nobody waiting on it: its failure is logged here (an outage
        is not: the entry runs out, and the next miss answers for it)."""
        error = _retrieved(task)
        if error is not None and not isinstance(error, DATABASE_DOWN):
            log.error("cache refresh failed", error=repr(error))


def _retrieved(task: asyncio.Task[T]) -> BaseException | None:
    """The load's error, marked retrieved: its waiters may all have gone away."""
    return None if task.cancelled() else task.exception()
