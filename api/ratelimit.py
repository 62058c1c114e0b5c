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

from limits import parse
from limits.aio import strategies
from limits.aio.storage import Storage
from limits.storage import storage_from_string

from api.errors import ApiError


def _async_uri(uri: str) -> tuple[str, dict[str, str]]:
    uri = uri if uri.startswith("async+") else f"async+{uri}"
    options = {"implementation": "redispy"} if uri.startswith("async+redis") else {}
    return uri, options


class RateLimiter:
    def __init__(self, storage_uri: str) -> None:
        uri, options = _async_uri(storage_uri)
        backend = storage_from_string(uri, **options)
        assert isinstance(backend, Storage)
        self._limiter = strategies.MovingWindowRateLimiter(backend)

    async def hit(
        self, key: str, rate: str, scope: str = "token", who: str = "this token"
    ) -> dict[str, str]:
        """Count one request; returns the headers, or raises 429 when the limit is spent."""
        item = parse(rate)
        allowed = await self._limiter.hit(item, scope, key)
        stats = await self._limiter.get_window_stats(item, scope, key)
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        headers = {
            "RateLimit-Limit": str(item.amount),
            "RateLimit-Remaining": str(max(0, stats.remaining)),
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
