"""Rate limits (moving window) with IETF ``RateLimit-*`` headers, on ``limits``' asyncio API
(its synchronous API would block the event loop on every Redis round trip).

Each limit has a scope and a key: API tokens by token id, client tokens by the execution they
open, callbacks by execution, the checkout and payment webhooks by client address. Storage is
in memory by default, or Redis (``TOLLWAY_RATE_LIMIT_STORAGE=redis://…``) shared by every API
process.
"""

from __future__ import annotations

import math
import time
from collections import deque
from functools import lru_cache

from limits import RateLimitItem, parse
from limits.aio import strategies
from limits.aio.storage import Storage
from limits.storage import storage_from_string

from api.errors import ApiError


def _async_uri(uri: str) -> tuple[str, dict[str, str]]:
    uri = uri if uri.startswith("async+") else f"async+{uri}"
    options = {"implementation": "redispy"} if uri.startswith("async+redis") else {}
    return uri, options


class _InProcessWindows:
    """The moving window of the in-memory storage, kept here rather than in ``limits``'
    asyncio memory storage, which sends every key to a thread on each expiry sweep (the
    profile of the view showed those hops as the API's largest own cost). Per key, the
    expiry times of the hits within the window: no thread, no lock (one event loop)."""

    _MAX_KEYS = 100_000

    def __init__(self) -> None:
        self._hits: dict[tuple[str, str], deque[float]] = {}

    def hit(self, scope: str, key: str, amount: int, window: float) -> tuple[bool, int, float]:
        """(allowed, remaining, seconds until the oldest hit leaves the window)."""
        now = time.monotonic()
        hits = self._hits.get((scope, key))
        if hits is None:
            if len(self._hits) >= self._MAX_KEYS:
                self._sweep(now)
            hits = self._hits[(scope, key)] = deque()
        while hits and hits[0] <= now:
            hits.popleft()
        allowed = len(hits) < amount
        if allowed:
            hits.append(now + window)
        reset = (hits[0] - now) if hits else 0.0
        return allowed, amount - len(hits), reset

    def _sweep(self, now: float) -> None:
        for slot in [k for k, v in self._hits.items() if not v or v[-1] <= now]:
            del self._hits[slot]


@lru_cache(maxsize=256)
def _parsed(rate: str) -> RateLimitItem:
    return parse(rate)


class RateLimiter:
    def __init__(self, storage_uri: str) -> None:
        self._local: _InProcessWindows | None = None
        if storage_uri.startswith("memory://"):
            self._local = _InProcessWindows()
            return
        uri, options = _async_uri(storage_uri)
        backend = storage_from_string(uri, **options)
        assert isinstance(backend, Storage)
        self._limiter = strategies.MovingWindowRateLimiter(backend)

    async def _count(self, item: RateLimitItem, scope: str, key: str) -> tuple[bool, int, int]:
        if self._local is not None:
            allowed, remaining, reset = self._local.hit(scope, key, item.amount, item.get_expiry())
            return allowed, remaining, math.ceil(reset)
        allowed = await self._limiter.hit(item, scope, key)
        stats = await self._limiter.get_window_stats(item, scope, key)
        return allowed, stats.remaining, max(0, math.ceil(stats.reset_time - time.time()))

    async def hit(
        self, key: str, rate: str, scope: str = "token", who: str = "this token"
    ) -> dict[str, str]:
        """Count one request; returns the headers, or raises 429 when the limit is spent."""
        item = _parsed(rate)
        allowed, remaining, reset = await self._count(item, scope, key)
        headers = {
            "RateLimit-Limit": str(item.amount),
            "RateLimit-Remaining": str(max(0, remaining)),
            "RateLimit-Reset": str(reset),
        }
        if not allowed:
            raise ApiError(
                429,
                "rate_limited",
                f"Rate limit of {rate} exceeded for {who}; retry in {max(1, reset)} s.",
                headers={**headers, "Retry-After": str(max(1, reset))},
            )
        return headers
