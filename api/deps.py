"""What handlers need, built once per app (in the lifespan, or handed in by tests)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlmodel import Session, select
from starlette.requests import Request

from api.auth import TokenResolver
from api.payment_events import PaymentEventProcessor
from api.ratelimit import RateLimiter
from api.read_cache import ReadCache
from api.streams import StreamSlots
from api.watch import Watchers
from tollway.admin import WorkflowRecord, find_workflow
from tollway.executions import ExecutionService
from tollway.ledger import OrderLedger
from tollway.local_bank import LocalBank
from tollway.settings import Settings, secret_value
from tollway.tables import WebhookEndpoint


class WorkflowCatalog:
    """Current workflow versions, cached for a few seconds (edits apply within ``ttl``); while
    the database is down, what was read within ``stale`` seconds is used."""

    def __init__(
        self,
        engine: Engine,
        ttl: float,
        stale: float = 300.0,
        on_load: Callable[[], None] | None = None,
    ) -> None:
        self._engine = engine
        self._cache: ReadCache[WorkflowRecord | None] = ReadCache(ttl, stale, on_load=on_load)

    async def get(self, workflow_id: str) -> WorkflowRecord | None:
        if len(workflow_id) > 40:  # no id of ours: not worth a query
            return None
        return await self._cache.get(workflow_id, lambda: find_workflow(self._engine, workflow_id))


class EndpointDirectory:
    """Whether an organization has status webhook endpoints (an execution emits events only
    then), cached like the workflows: an endpoint applies to executions created after it,
    within ``ttl``."""

    def __init__(
        self, engine: Engine, ttl: float, on_load: Callable[[], None] | None = None
    ) -> None:
        self._engine = engine
        self._cache: ReadCache[bool] = ReadCache(ttl, on_load=on_load)

    def _any(self, organization_id: str) -> bool:
        with Session(self._engine) as session:
            query = select(WebhookEndpoint.id).where(
                WebhookEndpoint.organization_id == organization_id
            )
            return session.exec(query.limit(1)).first() is not None

    async def any_for(self, organization_id: str) -> bool:
        return await self._cache.get(organization_id, lambda: self._any(organization_id))


def client_address(request: Request) -> str:
    """The peer's address (behind a proxy, run uvicorn with --proxy-headers and
    --forwarded-allow-ips so that this is the client's, not the proxy's)."""
    return request.client.host if request.client else "unknown"


@dataclass
class Deps:
    settings: Settings
    engine: Engine
    service: ExecutionService
    tokens: TokenResolver
    workflows: WorkflowCatalog
    rate_limiter: RateLimiter
    ledger: OrderLedger
    payments: PaymentEventProcessor
    local_bank: LocalBank
    streams: StreamSlots
    watchers: Watchers
    endpoints: EndpointDirectory

    async def limit_address(self, request: Request, rate: str, scope: str) -> dict[str, str]:
        """Count a request from this client address against ``rate`` (429 when spent)."""
        return await self.rate_limiter.hit(client_address(request), rate, scope, "this address")

    @property
    def client_token_secret(self) -> str:
        return secret_value(self.settings.client_token_secret, "TOLLWAY_CLIENT_TOKEN_SECRET")
