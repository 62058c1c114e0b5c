"""Step kinds end to end through the real worker, against HTTP servers on loopback."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from activities.steps.ssrf import AllowList, decide
from tests.helpers import GREETING, PARTNER_SECRET, Tenant, create, wait_status
from tests.history_text import decoded_history
from tests.servers import serve


class Target:
    """A partner API: records every request it gets."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.headers: list[dict[str, str]] = []
        self.bodies: list[bytes] = []

    def app(self) -> Starlette:
        async def handle(request: Request) -> Response:
            name = request.path_params["name"]
            self.hits[name] += 1
            self.headers.append(dict(request.headers))
            self.bodies.append(await request.body())
            if name == "json":
                return JSONResponse({"ok": True, "n": self.hits[name]})
            if name == "flaky":
                return (
                    JSONResponse({"error": "later"}, 503)
                    if self.hits[name] < 3
                    else JSONResponse({"ok": "third time"})
                )
            if name == "missing":
                return JSONResponse({"error": "nope"}, 404)
            if name == "slow":
                await asyncio.sleep(3)
                return JSONResponse({"late": True})
            if name == "big":
                return PlainTextResponse("x" * (2 * 1024 * 1024))
            if name in {"bomb", "gzipped"}:
                size = 64 * 1024 * 1024 if name == "bomb" else 1000
                payload = gzip.compress(b'{"z": "' + b"0" * size + b'"}', compresslevel=9)
                return Response(
                    payload,
                    headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
                )
            if name == "redirect":
                return RedirectResponse(request.query_params["to"], status_code=302)
            return PlainTextResponse("plain text")

        return Starlette(routes=[Route("/{name}", handle, methods=["GET", "POST"])])


@pytest.fixture(scope="module")
def allowed() -> Iterator[tuple[Target, str]]:
    target = Target()
    with serve(target.app(), "127.0.0.1") as base:
        yield target, base


@pytest.fixture(scope="module")
def refused() -> Iterator[tuple[Target, str]]:
    """Loopback, but outside the allow-list: the guard must keep requests away."""
    target = Target()
    with serve(target.app(), "127.0.0.2") as base:
        yield target, base


def http_flow(url: str, **step: Any) -> dict[str, Any]:
    return {
        **GREETING,
        "steps": [
            {
                "id": "call",
                "kind": "http",
                "url": url,
                "timeoutSeconds": 1,
                "retry": {"maxAttempts": 4, "initialIntervalSeconds": 0.1, "backoff": 1.0},
                **step,
            },
        ],
        "output": "steps.call",
    }


async def run(
    http: httpx.AsyncClient, tenant: Tenant, definition: dict[str, Any], status: str, **body: Any
) -> dict[str, Any]:
    wf = tenant.workflow(definition)
    response = await create(http, tenant, wf, **body)
    assert response.status_code == 200, response.text
    return await wait_status(
        http, response.json()["data"]["execution"]["id"], tenant.auth, status, 30
    )


async def attempts(client: Client, execution_id: str) -> int:
    history = await client.get_workflow_handle(execution_id).fetch_history()
    started = [
        e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]
    return max((e.activity_task_started_event_attributes.attempt for e in started), default=0)


async def test_http_json_response_is_the_output_with_templates_and_body(
    http: httpx.AsyncClient, tenant: Tenant, allowed: tuple[Target, str]
) -> None:
    target, base = allowed
    done = await run(
        http,
        tenant,
        http_flow(
            base + "/json?who={{ request.name }}",
            method="POST",
            headers={"X-Name": {"expr": "request.name"}, "X-Static": "v"},
            body="{greeting: join(' ', ['hi', request.name])}",
        ),
        "workflow_succeeded",
    )
    out = done["responsePayload"]
    assert out["status"] == 200 and out["body"]["ok"] is True
    assert out["headers"]["content-type"] == "application/json"
    assert target.headers[-1]["x-name"] == "Ada" and target.headers[-1]["x-static"] == "v"
    assert target.bodies[-1] == b'{"greeting":"hi Ada"}'


async def test_http_500_is_retried_then_succeeds(
    http: httpx.AsyncClient, client: Client, tenant: Tenant, allowed: tuple[Target, str]
) -> None:
    target, base = allowed
    done = await run(http, tenant, http_flow(base + "/flaky"), "workflow_succeeded")
    assert done["responsePayload"]["body"] == {"ok": "third time"}
    assert await attempts(client, done["id"]) == 3


async def test_http_404_is_final(
    http: httpx.AsyncClient, client: Client, tenant: Tenant, allowed: tuple[Target, str]
) -> None:
    target, base = allowed
    before = target.hits["missing"]
    done = await run(http, tenant, http_flow(base + "/missing"), "workflow_failed")
    assert done["statusReason"] == f"step 'call' failed: GET {base}/missing answered 404"
    assert target.hits["missing"] == before + 1
    assert await attempts(client, done["id"]) == 1


async def test_http_timeout_fails_after_retries(
    http: httpx.AsyncClient, client: Client, tenant: Tenant, allowed: tuple[Target, str]
) -> None:
    _, base = allowed
    flow = http_flow(base + "/slow")
    flow["steps"][0]["retry"] = {"maxAttempts": 2, "initialIntervalSeconds": 0.1}
    done = await run(http, tenant, flow, "workflow_failed")
    assert "timed out after 1.0 s" in done["statusReason"]
    assert await attempts(client, done["id"]) == 2


async def test_timeout_listed_as_final_is_not_retried(
    http: httpx.AsyncClient, client: Client, tenant: Tenant, allowed: tuple[Target, str]
) -> None:
    _, base = allowed
    flow = http_flow(base + "/slow")
    flow["steps"][0]["retry"] = {"maxAttempts": 5, "nonRetryableErrors": ["Timeout"]}
    done = await run(http, tenant, flow, "workflow_failed")
    assert await attempts(client, done["id"]) == 1


async def test_oversize_response_is_refused(
    http: httpx.AsyncClient, tenant: Tenant, allowed: tuple[Target, str]
) -> None:
    _, base = allowed
    done = await run(http, tenant, http_flow(base + "/big"), "workflow_failed")
    assert "exceeds 1048576 bytes" in done["statusReason"]


async def test_redirect_to_a_refused_address_is_not_followed(
    http: httpx.AsyncClient,
    tenant: Tenant,
    allowed: tuple[Target, str],
    refused: tuple[Target, str],
) -> None:
    _, base = allowed
    target, forbidden = refused
    done = await run(
        http, tenant, http_flow(f"{base}/redirect?to={forbidden}/json"), "workflow_failed"
    )
    assert "refused" in done["statusReason"] and "127.0.0.2" in done["statusReason"]
    assert target.hits["json"] == 0


@pytest.mark.parametrize("host", ["127.0.0.2", "127.1.2.3", "[::1]"])
async def test_addresses_outside_the_allow_list_are_refused_end_to_end(
    http: httpx.AsyncClient, tenant: Tenant, refused: tuple[Target, str], host: str
) -> None:
    target, forbidden = refused
    port = forbidden.rsplit(":", 1)[1]
    url = f"http://{host}:{port}/json"
    done = await run(http, tenant, http_flow(url), "workflow_failed")
    assert "refused" in done["statusReason"], done["statusReason"]
    assert sum(target.hits.values()) == 0


@pytest.mark.parametrize(
    ("ip", "reason"),
    [
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("127.0.0.1", "loopback"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.10.10", "link-local"),
        ("100.100.100.200", "cloud metadata"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("168.63.129.16", "cloud metadata"),
        ("192.0.2.10", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("255.255.255.255", "reserved"),
        # IPv6 transition addresses are judged by the IPv4 address they reach.
        ("2002:a9fe:a9fe::1", "cloud metadata"),  # 6to4 of 169.254.169.254
        ("2002:0a00:0001::", "private"),  # 6to4 of 10.0.0.1
        ("2002:7f00:0001::", "loopback"),  # 6to4 of 127.0.0.1
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # Teredo, client 127.0.0.1
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private"),  # Teredo, client 10.0.0.1
        ("2001:0:0a00:0001:8000:63bf:f7f7:f7f7", "private"),  # Teredo, server 10.0.0.1
        ("64:ff9b::a9fe:a9fe", "cloud metadata"),  # NAT64 of 169.254.169.254
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("64:ff9b:1::c0a8:101", "private"),  # local-use NAT64 of 192.168.1.1
        ("2001:db8::1", "documentation"),
        ("::ffff:127.0.0.1", "loopback"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("::1", "loopback"),
        ("fd00:ec2::254", "cloud metadata"),
        ("fc00::1", "private"),
        ("fe80::1", "link-local"),
        ("::ffff:10.0.0.1", "private"),
    ],
)
def test_guard_refuses_non_public_addresses_without_connecting(ip: str, reason: str) -> None:
    verdict = decide("partner.example", 443, ipaddress.ip_address(ip), AllowList.parse(""))
    assert verdict is not None and f"({reason})" in verdict


def test_guard_allows_public_addresses_and_listed_exceptions() -> None:
    public = ipaddress.ip_address("93.184.216.34")
    assert decide("example.com", 443, public, AllowList.parse("")) is None
    for reaches_public in (
        "2606:2800:220:1::",  # plain public IPv6
        "2002:5db8:d822::1",  # 6to4 of 93.184.216.34
        "64:ff9b::5db8:d822",  # NAT64 of 93.184.216.34
        "2001:0:4136:e378:8000:63bf:a247:27dd",  # Teredo: both ends public
    ):
        assert decide("x", 443, ipaddress.ip_address(reaches_public), AllowList.parse("")) is None
    allow = AllowList.parse("10.0.0.0/8, internal.example, db.example:8443, [::1]:9000")
    assert decide("x", 80, ipaddress.ip_address("10.9.9.9"), allow) is None
    assert decide("internal.example", 80, ipaddress.ip_address("192.168.0.5"), allow) is None
    assert decide("db.example", 8443, ipaddress.ip_address("192.168.0.6"), allow) is None
    assert decide("db.example", 22, ipaddress.ip_address("192.168.0.6"), allow) is not None
    assert decide("::1", 9000, ipaddress.ip_address("::1"), allow) is None
    assert decide("::1", 9001, ipaddress.ip_address("::1"), allow) is not None


async def test_secret_header_is_sent_and_appears_nowhere_in_history(
    http: httpx.AsyncClient, client: Client, tenant: Tenant, allowed: tuple[Target, str]
) -> None:
    target, base = allowed
    tenant.secret("PARTNER_API_KEY", PARTNER_SECRET, "127.0.0.1")
    done = await run(
        http,
        tenant,
        http_flow(base + "/json", headers={"Authorization": {"secret": "PARTNER_API_KEY"}}),
        "workflow_succeeded",
    )
    assert target.headers[-1]["authorization"] == PARTNER_SECRET
    history = await decoded_history(client, done["id"])
    assert "PARTNER_API_KEY" in history  # decoded: the step's input is readable here
    assert PARTNER_SECRET not in history
    assert PARTNER_SECRET not in str(done)


async def test_missing_secret_fails_without_a_request(
    http: httpx.AsyncClient, tenant: Tenant, allowed: tuple[Target, str]
) -> None:
    target, base = allowed
    before = sum(target.hits.values())
    done = await run(
        http,
        tenant,
        http_flow(base + "/json", headers={"Authorization": {"secret": "NOT_SET_ANYWHERE"}}),
        "workflow_failed",
    )
    assert (
        "secret 'NOT_SET_ANYWHERE' is not set for this workflow's organization"
        in (done["statusReason"])
    )
    assert sum(target.hits.values()) == before


async def test_delay_is_a_durable_timer(
    http: httpx.AsyncClient, client: Client, tenant: Tenant
) -> None:
    done = await run(
        http,
        tenant,
        {
            **GREETING,
            "steps": [{"id": "pause", "kind": "delay", "seconds": 0.5}],
            "output": "steps.pause",
        },
        "workflow_succeeded",
    )
    assert done["responsePayload"] == {"sleptSeconds": 0.5}
    history = await client.get_workflow_handle(done["id"]).fetch_history()
    assert any(e.event_type == EventType.EVENT_TYPE_TIMER_FIRED for e in history.events)


CALLBACK_FLOW = {
    **GREETING,
    "steps": [
        {"id": "approve", "kind": "wait_for_callback", "timeoutSeconds": 30},
        {"id": "done", "kind": "transform", "expression": "{decision: steps.approve.decision}"},
    ],
    "output": "steps.done",
}


async def test_wait_for_callback_waits_then_takes_the_posted_body(
    http: httpx.AsyncClient, client: Client, tenant: Tenant
) -> None:
    wf = tenant.workflow(CALLBACK_FLOW)
    data = (await create(http, tenant, wf)).json()["data"]
    eid = data["execution"]["id"]
    waiting = await wait_status(http, eid, tenant.auth, "workflow_waiting")
    callback = waiting["callbacks"]["approve"]
    assert callback["url"].endswith(f"/v1/public/executions/{eid}/callbacks/approve")
    client_view = await http.get(
        f"/v1/public/executions/{eid}", params={"client_token": data["clientToken"]}
    )
    assert "callbacks" not in client_view.json()["data"]["execution"]

    path = f"/v1/public/executions/{eid}/callbacks/approve"
    wrong = await http.post(
        path, json={"decision": "no"}, headers={"Authorization": "Bearer cb_wrong"}
    )
    assert wrong.status_code == 401
    other_step = await http.post(
        f"/v1/public/executions/{eid}/callbacks/nope",
        json={},
        headers={"Authorization": f"Bearer {callback['token']}"},
    )
    assert other_step.status_code == 404
    history = await decoded_history(client, eid)
    assert callback["token"] in history  # decoded: the issued token is readable here
    assert "cb_wrong" not in history  # a refused callback leaves no trace

    ok = await http.post(
        path, json={"decision": "yes"}, headers={"Authorization": f"Bearer {callback['token']}"}
    )
    assert ok.status_code == 200, ok.text
    done = await wait_status(http, eid, tenant.auth, "workflow_succeeded")
    assert done["responsePayload"] == {"decision": "yes"}
    assert done["callbacks"] is None
    again = await http.post(
        path, json={"decision": "again"}, headers={"Authorization": f"Bearer {callback['token']}"}
    )
    assert again.status_code == 409


async def test_wait_for_callback_times_out(http: httpx.AsyncClient, tenant: Tenant) -> None:
    flow = {
        **CALLBACK_FLOW,
        "steps": [{"id": "approve", "kind": "wait_for_callback", "timeoutSeconds": 0.5}],
    }
    done = await run(http, tenant, flow, "workflow_failed")
    assert done["statusReason"] == "step 'approve' failed: no callback within 0.5 s"


async def test_when_skips_a_step(
    http: httpx.AsyncClient, tenant: Tenant, allowed: tuple[Target, str]
) -> None:
    target, base = allowed
    before = sum(target.hits.values())
    done = await run(
        http,
        tenant,
        {
            **GREETING,
            "steps": [
                {"id": "call", "kind": "http", "url": base + "/json", "when": "request.send"},
                {"id": "after", "kind": "transform", "expression": "{skipped: steps.call == null}"},
            ],
            "output": "steps.after",
        },
        "workflow_succeeded",
        requestPayload={"send": False},
    )
    assert done["responsePayload"] == {"skipped": True}
    assert sum(target.hits.values()) == before


async def test_python_step_calls_the_registered_function(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    done = await run(
        http,
        tenant,
        {
            **GREETING,
            "steps": [{"id": "calc", "kind": "python", "activity": "double", "input": "request.n"}],
            "output": "steps.calc",
        },
        "workflow_succeeded",
        requestPayload={"n": 21},
    )
    assert done["responsePayload"] == {"doubled": 42}
    failed = await run(
        http,
        tenant,
        {
            **GREETING,
            "steps": [
                {
                    "id": "calc",
                    "kind": "python",
                    "activity": "explode",
                    "input": "request.n",
                    "retry": {"maxAttempts": 1},
                }
            ],
        },
        "workflow_failed",
        requestPayload={"n": 1},
    )
    assert failed["statusReason"] == "step 'calc' failed: cannot handle 1"
    unknown = await run(
        http,
        tenant,
        {**GREETING, "steps": [{"id": "calc", "kind": "python", "activity": "nope"}]},
        "workflow_failed",
    )
    assert "no python activity 'nope'" in unknown["statusReason"]
