"""One log line when a dependency stops answering and one when it is back, however many
attempts fail in between (retries are Temporal's business; the log is for people). Used
around activities that only talk to Tollway's own database."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

DATABASE_DOWN: tuple[type[Exception], ...] = (OperationalError, InterfaceError, SATimeoutError)
log = structlog.get_logger("tollway.outage")


class OutageLog:
    def __init__(self, dependency: str) -> None:
        self._dependency = dependency
        self._since: float | None = None
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return self._since is not None

    @contextmanager
    def watch(self) -> Iterator[None]:
        try:
            yield
        except DATABASE_DOWN as exc:
            with self._lock:
                first = self._since is None
                if first:
                    self._since = time.monotonic()
            if first:
                log.warning(f"{self._dependency} unavailable", error=type(exc).__name__)
            # Retryable, and "benign": the SDK does not log a traceback for every attempt.
            raise ApplicationError(
                f"{self._dependency} unavailable ({type(exc).__name__})",
                type="DependencyUnavailable",
                category=ApplicationErrorCategory.BENIGN,
            ) from None
        with self._lock:
            since, self._since = self._since, None
        if since is not None:
            log.info(
                f"{self._dependency} available again",
                down_seconds=round(time.monotonic() - since, 1),
            )
