"""Listing executions newest first (by creation) from a visibility store that cannot sort.

Temporal's SQL visibility stores (SQLite, PostgreSQL, MySQL) refuse ``ORDER BY``: they answer
open executions first, newest start first, then closed executions by when they *closed*. Two
executions that finish out of order would list out of creation order. So the order is rebuilt
from two listings read one after the other, open first (two calls in the common case):

* the first ``want = limit + 1`` open executions: already in creation order;
* closed executions in closing order, read until one closed before the ``want``-th newest
  start seen among them. Every execution closed after it started, so none read later (they
  closed earlier still) started late enough to be among the newest ``want``.

If that second listing runs long (``MAX_SCANNED`` rows: many executions that started long ago
and closed recently), reading stops; what started after the last row read is certain, and the
rest of the page comes from a start-time window below it, sized by counting, that is read whole.

A page is the newest ``limit`` of what was read; the cursor is the position after its last
item: its start time to the microsecond, with the run ids already answered at that same
microsecond, so that ties are neither repeated nor lost.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from temporalio.client import Client, WorkflowExecution

from tollway.visibility_query import quoted, quoted_instant

MAX_SCANNED = 1000
"""Closed executions read in closing order for one page at most."""
MAX_WINDOW = 1000
"""Executions a start-time window read whole may hold."""

_MICROSECOND = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_OPEN = "ExecutionStatus = 'Running'"
_CLOSED = "ExecutionStatus != 'Running'"


def _rank(row: WorkflowExecution) -> tuple[float, str]:
    """Newest start first; ties by run id, as the visibility stores break them."""
    return (-row.start_time.timestamp(), row.run_id or "")


@dataclass(frozen=True)
class Position:
    """Where a page ended: executions started at or before ``started`` (to the microsecond)
    and not among the ``answered`` runs of that microsecond come next."""

    started: datetime
    answered: tuple[str, ...] = ()

    def condition(self) -> str:
        text = f"StartTime < {quoted_instant(self.started + _MICROSECOND)}"
        if self.answered:
            text += " AND RunId NOT IN (" + ", ".join(quoted(r) for r in self.answered) + ")"
        return text

    def encode(self) -> bytes:
        return json.dumps(
            {"started": self.started.isoformat(), "answered": list(self.answered)},
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, token: bytes) -> Position:
        """Raises ``ValueError`` for anything :meth:`encode` did not write."""
        try:
            data = json.loads(token)
            started = datetime.fromisoformat(data["started"])
            answered = tuple(data["answered"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError("not a list position") from err
        if started.tzinfo is None or not all(_is_run_id(r) for r in answered):
            raise ValueError("not a list position")
        return cls(started, answered)


def _is_run_id(text: object) -> bool:
    return (
        isinstance(text, str)
        and 0 < len(text) <= 64
        and all(c.isascii() and (c.isalnum() or c == "-") for c in text)
    )


@dataclass(frozen=True)
class Page:
    rows: list[WorkflowExecution]
    after: Position | None
    """Where the next page starts; ``None`` when this one is the last."""


async def newest_page(client: Client, query: str, limit: int, previous: Position | None) -> Page:
    """The newest ``limit`` executions matching ``query`` (after ``previous``)."""
    if previous is not None:
        query = f"{query} AND {previous.condition()}"
    want = limit + 1
    # Open first, then closed, one after the other: an execution that closes between the two
    # reads is in both (kept once, as closed). Read side by side, it could be in neither: the
    # open listing read after it closed and the closed listing before.
    open_rows = await _first(client, f"{query} AND {_OPEN}", want)
    closed_rows, floor, cut_short = await _closed_down_to_newest(
        client, f"{query} AND {_CLOSED}", want
    )
    complete = floor is None and len(open_rows) < want
    closed_runs = {r.run_id for r in closed_rows}
    rows = [
        r
        for r in [*(o for o in open_rows if o.run_id not in closed_runs), *closed_rows]
        if floor is None or r.start_time > floor
    ]
    if cut_short and len(rows) < want:
        assert floor is not None
        below, complete = await _window_below(client, query, floor, want - len(rows))
        rows += below
    return _page(sorted(rows, key=_rank), limit, complete, previous)


def _page(
    ranked: Sequence[WorkflowExecution], limit: int, complete: bool, previous: Position | None
) -> Page:
    """``ranked`` holds every execution that ranks above its last; ``complete``: and there
    are none below it."""
    page = list(ranked[:limit])
    if complete and len(ranked) <= limit:
        return Page(page, None)
    last = page[-1].start_time
    answered = [r.run_id or "" for r in page if r.start_time == last]
    if previous is not None and previous.started == last:
        answered = [*previous.answered, *answered]
    return Page(page, Position(last, tuple(answered)))


async def _first(client: Client, query: str, count: int) -> list[WorkflowExecution]:
    return [row async for row in client.list_workflows(query, limit=count, page_size=count)]


async def _closed_down_to_newest(
    client: Client, query: str, want: int
) -> tuple[list[WorkflowExecution], datetime | None, bool]:
    """Closed executions in closing order until none unread can be among the newest ``want``.

    Returns the rows read, the *floor* (``None`` when everything was read; else the close time
    of the last row read: nothing unread started later) and whether reading was cut short at
    ``MAX_SCANNED`` rather than stopped because nothing unread could matter."""
    rows: list[WorkflowExecution] = []
    newest_starts: list[datetime] = []  # a min-heap of the ``want`` newest start times
    async for row in client.list_workflows(query, page_size=min(max(2 * want, 100), 500)):
        rows.append(row)
        heapq.heappush(newest_starts, row.start_time)
        if len(newest_starts) > want:
            heapq.heappop(newest_starts)
        closed = row.close_time or row.start_time
        if len(newest_starts) == want and closed < newest_starts[0]:
            return rows, closed, False
        if len(rows) >= MAX_SCANNED:
            return rows, closed, True
    return rows, None, False


async def _window_below(
    client: Client, query: str, floor: datetime, want: int
) -> tuple[list[WorkflowExecution], bool]:
    """Every execution started at or before ``floor`` and after a cutoff chosen so that there
    are at least ``want`` of them and, where time allows, at most ``MAX_WINDOW``; and whether
    that is all of them."""
    under = f"{query} AND {Position(floor).condition()}"

    async def count(since: datetime | None) -> int:
        text = under if since is None else f"{under} AND StartTime >= {quoted_instant(since)}"
        return (await client.count_workflows(text)).count

    if await count(None) <= max(MAX_WINDOW, want):
        return await _all(client, under), True
    # More than ``want`` exist, all started since the epoch: widening finds them.
    narrow, wide = timedelta(0), timedelta(seconds=1)  # count(narrow) < want <= count(wide)
    while (found := await count(floor - wide)) < want:
        if floor - wide < _EPOCH:
            return await _all(client, under), True
        narrow, wide = wide, wide * 4
    while found > MAX_WINDOW and wide - narrow > _MICROSECOND:
        middle = narrow + (wide - narrow) / 2
        if (in_middle := await count(floor - middle)) >= want:
            wide, found = middle, in_middle
        else:
            narrow = middle
    return await _all(client, f"{under} AND StartTime >= {quoted_instant(floor - wide)}"), False


async def _all(client: Client, query: str) -> list[WorkflowExecution]:
    return [row async for row in client.list_workflows(query, page_size=MAX_WINDOW)]
