"""Limits on the routes that take no API token (client tokens, callbacks, the checkout,
payment webhooks) and on event streams: how many, how long, and gone when the client goes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.worker import Worker

from api.app import create_app
from tests.conftest import make_settings
from tests.helpers import Tenant, api_client, create, eventually
from tests.money import send
from tests.servers import serve
from tollway.settings import Settings

LIMITED = {
    "client_rate_limit": "3/minute",
    "callback_rate_limit": "2/minute",
    "checkout_rate_limit": "2/minute",
    "webhook_rate_limit": "2/minute",
    "codec_rate_limit": "2/minute",
    "sse_max_streams_per_token": 1,
    "sse_max_streams_per_address": 2,
    "sse_max_seconds": 1.5,
    "sse_keepalive_seconds": 0.4,
}


@pytest.fixture
def limited_settings(database_url: str, temporal_address: str, settings: Settings) -> Settings:
    # The session worker's task queue, so executions made here run.
    return make_settings(database_url, temporal_address, task_queue=settings.task_queue, **LIMITED)


@pytest.fixture
async def limited(
    client: Client, engine: Engine, limited_settings: Settings, worker: Worker
) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(limited_settings, client, engine) as http:
        yield http


def assert_429(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["ratelimit-remaining"] == "0"
    assert {"ratelimit-limit", "ratelimit-reset"} <= set(response.headers)


async def priced(http: httpx.AsyncClient, tenant: Tenant) -> dict[str, Any]:
    response = await create(http, tenant, tenant.priced_wf)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def test_client_token_reads_and_streams_are_limited_per_execution(
    limited: httpx.AsyncClient, tenant: Tenant
) -> None:
    data, other = await priced(limited, tenant), await priced(limited, tenant)
    url = f"/v1/public/executions/{data['execution']['id']}"
    bearer = {"Authorization": f"Bearer {data['clientToken']}"}
    for remaining in ("2", "1"):
        ok = await limited.get(url, headers=bearer)
        assert ok.status_code == 200 and ok.headers["ratelimit-remaining"] == remaining
    ok = await limited.get(url, params={"client_token": data["clientToken"]})
    assert ok.status_code == 200
    assert_429(await limited.get(url, headers=bearer))
    assert_429(await limited.get(f"{url}/events", headers=bearer))
    # A fresh client token for the same execution (a replayed create) buys nothing more...
    replay = await create(
        limited, tenant, tenant.priced_wf, idempotencyKey=data["execution"]["idempotencyKey"]
    )
    fresh = {"Authorization": f"Bearer {replay.json()['data']['clientToken']}"}
    assert_429(await limited.get(url, headers=fresh))
    # ...while another execution's token is counted on its own.
    theirs = f"/v1/public/executions/{other['execution']['id']}"
    other_bearer = {"Authorization": f"Bearer {other['clientToken']}"}
    assert (await limited.get(theirs, headers=other_bearer)).status_code == 200


async def test_callbacks_checkout_and_webhooks_are_limited(
    limited: httpx.AsyncClient, tenant: Tenant
) -> None:
    data = await priced(limited, tenant)
    eid = data["execution"]["id"]
    callback = f"/v1/public/executions/{eid}/callbacks/none"
    for _ in range(2):
        refused = await limited.post(callback, json={}, headers={"Authorization": "Bearer cb_x"})
        assert refused.status_code == 404
    assert_429(await limited.post(callback, json={}, headers={"Authorization": "Bearer cb_x"}))

    page = f"/checkout/{data['execution']['checkoutSessionId']}"
    assert (await limited.get(page)).status_code == 200
    assert (await limited.post(f"{page}/pay", data={"csrf": "x"})).status_code == 403
    spent = await limited.get(page)
    assert_429(spent)
    assert spent.headers["content-type"].startswith("text/html")

    for _ in range(2):
        assert (await limited.post("/codec/login", data={"token": "tw_guess"})).status_code == 403
    assert_429(await limited.post("/codec/login", data={"token": "tw_guess"}))
    assert_429(await limited.post("/codec/decode", json={"payloads": []}))

    unrelated = {"id": "evt_limit", "type": "customer.created", "data": {"object": {}}}
    for _ in range(2):
        assert (await send(limited, unrelated)).status_code == 200
    assert_429(await send(limited, unrelated))


async def test_streams_are_capped_end_after_their_lifetime_and_keep_alive(
    limited: httpx.AsyncClient, tenant: Tenant
) -> None:
    first, second = await priced(limited, tenant), await priced(limited, tenant)

    def stream(data: dict[str, Any]) -> Any:
        return limited.get(
            f"/v1/public/executions/{data['execution']['id']}/events", headers=tenant.auth
        )

    async def third_while_two_are_open() -> tuple[httpx.Response, ...]:
        await asyncio.sleep(0.3)
        same_token = await stream(first)  # the API token already holds its one stream
        return (same_token,)

    # ASGITransport returns a stream's response once the stream has ended.
    ended, (refused,) = await asyncio.gather(stream(first), third_while_two_are_open())
    assert_429_stream(refused)
    body = ended.text
    assert body.count("event: execution") == 1  # nothing changed while it was open
    assert ": keep-alive" in body
    assert body.rstrip().endswith('event: reconnect\ndata: {"reason":"max_lifetime"}\nretry: 1000')
    # The slot came back: a new stream may open.
    again = await stream(second)
    assert again.status_code == 200 and "event: reconnect" in again.text


def assert_429_stream(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"] == "rate_limited" and response.headers["retry-after"]


async def test_a_dropped_stream_stops_at_once(
    engine: Engine, limited_settings: Settings, tenant: Tenant, http: httpx.AsyncClient
) -> None:
    data = await priced(http, tenant)
    settings = limited_settings.model_copy(update={"sse_max_seconds": 60.0})
    app = create_app(settings)
    with serve(app, lifespan="on") as base:
        url = f"{base}/v1/public/executions/{data['execution']['id']}/events"
        async with (
            httpx.AsyncClient() as real,
            real.stream("GET", url, headers=tenant.auth) as response,
        ):
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("event: execution"):
                    break
            streams = app.state.deps.streams
            assert streams.open_count("address", "127.0.0.1") == 1
        # The client went away: the stream, and its polling, end now, not at its lifetime.
        gone = await eventually(
            lambda: asyncio.sleep(0, streams.open_count("address", "127.0.0.1")),
            lambda n: n == 0,
            timeout=3,
        )
        assert gone == 0
