"""Caps on Server-Sent Events streams: concurrent streams per token and per client address,
in this API process (each stream holds a connection and a poll loop)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from api.errors import ApiError


class StreamSlots:
    def __init__(self, per_token: int, per_address: int) -> None:
        self._per = {"token": per_token, "address": per_address}
        self._open: Counter[tuple[str, str]] = Counter()

    def open_count(self, kind: str, key: str) -> int:
        return self._open[(kind, key)]

    def take(self, token_key: str, address: str) -> Callable[[], None]:
        """Take a slot for a stream (429 when either cap is reached); returns its release,
        which is safe to call more than once."""
        wanted = [("token", token_key), ("address", address)]
        for kind, key in wanted:
            if self._open[(kind, key)] >= self._per[kind]:
                raise ApiError(
                    429,
                    "rate_limited",
                    f"Too many open event streams for this {kind} "
                    f"(at most {self._per[kind]}); close one first.",
                    headers={"Retry-After": "5"},
                )
        for slot in wanted:
            self._open[slot] += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            for slot in wanted:
                self._open[slot] -= 1
                if self._open[slot] <= 0:
                    del self._open[slot]

        return release
