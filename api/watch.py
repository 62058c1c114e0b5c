"""One watcher per execution per API process: a single poll loop (queries, so nothing is added
to the workflow's history) feeds every event stream and every ``Prefer: wait`` caller on that
execution. A hundred browsers on one execution cost one loop, not a hundred; the loop stops
when the last of them goes, or when the execution has ended."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from tollway.executions import ExecutionService, TemporalUnavailable
from workflows.models import ExecutionView, Status

#: States a waiting caller need not wait past: ended, or waiting on the outside world.
SETTLED = frozenset({Status.AWAITING_PAYMENT, Status.WAITING})


def settled(view: ExecutionView) -> bool:
    return view.status.terminal or view.status in SETTLED


def event_id(view: ExecutionView) -> int:
    """Orders an execution's changes: the microsecond of its last change."""
    return int(view.updatedAt.timestamp() * 1_000_000)


class Watch:
    def __init__(self, execution_id: str) -> None:
        self.execution_id = execution_id
        self.latest: ExecutionView | None = None
        self.version = 0
        self.subscribers = 0
        self.task: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()

    async def offer(self, view: ExecutionView) -> None:
        """A view read by anyone: kept (and announced) when it is newer than the latest."""
        if self.latest is not None and event_id(view) <= event_id(self.latest):
            return
        async with self._changed:
            self.latest = view
            self.version += 1
            self._changed.notify_all()

    async def changed(self, since: int, timeout: float) -> bool:
        """Wait until the version passes ``since``; False on timeout."""
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.version > since), timeout
                )
            except TimeoutError:
                return False
        return True


class Watchers:
    def __init__(
        self,
        service: ExecutionService,
        poll_seconds: float = 0.5,
        on_poll: Callable[[], None] | None = None,
    ) -> None:
        self._service = service
        self._poll = poll_seconds
        self._on_poll = on_poll or (lambda: None)
        self._watches: dict[str, Watch] = {}

    def open_count(self) -> int:
        return len(self._watches)

    def join(self, execution_id: str) -> Watch:
        watch = self._watches.get(execution_id)
        if watch is None:
            watch = self._watches[execution_id] = Watch(execution_id)
        watch.subscribers += 1
        if watch.task is None:
            watch.task = asyncio.create_task(self._run(watch))
        return watch

    def leave(self, watch: Watch) -> None:
        watch.subscribers -= 1
        if watch.subscribers > 0:
            return
        if watch.task is not None:
            watch.task.cancel()
        if self._watches.get(watch.execution_id) is watch:
            del self._watches[watch.execution_id]

    async def _run(self, watch: Watch) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while watch.latest is None or not watch.latest.status.terminal:
                await asyncio.sleep(self._poll)
                self._on_poll()
                try:
                    view = await self._service.view(watch.execution_id)
                except TemporalUnavailable:
                    continue  # the streams keep their last state; try again
                if view is not None:
                    await watch.offer(view)

    async def publish(self, view: ExecutionView) -> None:
        """A view this process just learned (an update's answer: a payment, a cancel, a
        callback): its watchers, if any, pass it on now instead of at their next poll."""
        watch = self._watches.get(view.id)
        if watch is not None:
            await watch.offer(view)

    async def wait_settled(self, view: ExecutionView, seconds: float) -> ExecutionView:
        """``view``, or a later one: once the execution is settled or ``seconds`` passed."""
        if settled(view) or seconds <= 0:
            return view
        watch = self.join(view.id)
        try:
            await watch.offer(view)
            loop = asyncio.get_running_loop()
            ends = loop.time() + seconds
            while watch.latest is not None and not settled(watch.latest):
                left = ends - loop.time()
                if left <= 0 or not await watch.changed(watch.version, left):
                    break
            return watch.latest or view
        finally:
            self.leave(watch)
