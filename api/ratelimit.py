"""Per-token rate limits (moving window) with IETF ``RateLimit-*`` headers."""

from __future__ import annotations

import math
import time

from limits import parse, storage, strategies

from api.errors import ApiError


class RateLimiter:
    def __init__(self, storage_uri: str) -> None:
        self._limiter = strategies.MovingWindowRateLimiter(storage.storage_from_string(storage_uri))

    def hit(self, token_id: str, rate: str) -> dict[str, str]:
        """Count one request; returns the headers, or raises 429 when the limit is spent."""
        item = parse(rate)
        allowed = self._limiter.hit(item, "token", token_id)
        reset_at, remaining = self._limiter.get_window_stats(item, "token", token_id)
        reset = max(0, math.ceil(reset_at - time.time()))
        headers = {
            "RateLimit-Limit": str(item.amount),
            "RateLimit-Remaining": str(max(0, remaining)),
            "RateLimit-Reset": str(reset),
        }
        if not allowed:
            raise ApiError(
                429,
                "rate_limited",
                f"Rate limit of {rate} exceeded for this token; retry in {max(1, reset)} s.",
                headers={**headers, "Retry-After": str(max(1, reset))},
            )
        return headers
