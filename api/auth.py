"""Who is calling: an API token (looked up by hash, cached briefly) or a client token."""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio.to_thread
from sqlalchemy import Engine
from starlette.requests import Request

from api.errors import DATABASE_DOWN, unauthorized
from tollway.admin import find_token, find_token_by_id, hash_token


@dataclass(frozen=True)
class Principal:
    token_id: str
    organization_id: str
    scopes: frozenset[str]
    rate_limit: str


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class TokenResolver:
    """Resolves API tokens to principals. A small TTL cache keeps the database off the hot
    path; a revoked token stops working within ``ttl`` seconds.

    While the database does not answer, a token verified within the last ``stale`` seconds
    keeps working from what was last verified (a short outage costs callers nothing); one
    never verified, or verified longer ago, gets a 503. Revocation still wins within ``ttl``
    whenever the database answers."""

    def __init__(
        self, engine: Engine, ttl: float, max_entries: int = 10_000, stale: float = 300.0
    ) -> None:
        self._engine = engine
        self._ttl = ttl
        self._stale = stale
        self._max = max_entries
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._verified: dict[str, tuple[float, Principal]] = {}

    def _lookup(self, token: str) -> Principal | None:
        row = find_token(self._engine, token)
        if row is None:
            return None
        return Principal(row.id, row.organization_id, frozenset(row.scopes), row.rate_limit)

    async def resolve(self, token: str) -> Principal | None:
        key = hash_token(token)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            principal = await anyio.to_thread.run_sync(self._lookup, token)
        except DATABASE_DOWN:
            known = self._verified.get(key)
            if known is not None and now - known[0] <= self._stale:
                return known[1]
            raise
        if len(self._cache) >= self._max:
            self._cache.clear()
        if len(self._verified) >= self._max:
            self._verified.clear()
        self._cache[key] = (now + self._ttl, principal)
        if principal is None:
            self._verified.pop(key, None)
        else:
            self._verified[key] = (now, principal)
        return principal

    async def active(self, token_id: str, scope: str) -> bool:
        """Whether the token ``token_id`` still exists unrevoked with ``scope`` (sessions made
        from a token end when it is revoked)."""
        row = await anyio.to_thread.run_sync(find_token_by_id, self._engine, token_id)
        return row is not None and scope in row.scopes

    async def require(self, request: Request) -> Principal:
        token = bearer_token(request)
        if token is None:
            raise unauthorized()
        principal = await self.resolve(token)
        if principal is None:
            raise unauthorized("The API token is not valid.")
        return principal
