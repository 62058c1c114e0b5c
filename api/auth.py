"""Who is calling: an API token (looked up by hash, cached briefly) or a client token."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import anyio.to_thread
from sqlalchemy import Engine
from starlette.requests import Request

from api.errors import unauthorized
from api.read_cache import ReadCache
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
    """Resolves API tokens to principals, kept ``ttl`` seconds (api/read_cache.py): a revoked
    token stops working within ``ttl``.

    While the database does not answer, a token verified within the last ``stale`` seconds
    keeps working from what was last verified (a short outage costs callers nothing); one
    never verified, or verified longer ago, gets a 503. Revocation still wins within ``ttl``
    whenever the database answers."""

    def __init__(
        self,
        engine: Engine,
        ttl: float,
        max_entries: int = 10_000,
        stale: float = 300.0,
        on_load: Callable[[], None] | None = None,
    ) -> None:
        self._engine = engine
        self._cache: ReadCache[Principal | None] = ReadCache(
            ttl,
            stale,
            keep=lambda principal: principal is not None,
            max_entries=max_entries,
            on_load=on_load,
        )

    def _lookup(self, token: str) -> Principal | None:
        row = find_token(self._engine, token)
        if row is None:
            return None
        return Principal(row.id, row.organization_id, frozenset(row.scopes), row.rate_limit)

    async def resolve(self, token: str) -> Principal | None:
        return await self._cache.get(hash_token(token), lambda: self._lookup(token))

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
