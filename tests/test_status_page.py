"""The payer's status page without a browser: who may see it, what it says in each state,
escaping, the CSP, and the token kept out of the address bar."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from api.status_page import CSP
from tests.helpers import GREETING, Tenant, create, wait_status
from tests.money import pay_via_webhook
from tests.test_push import paused


@asynccontextmanager
async def open_status(
    http: httpx.AsyncClient, data: dict[str, Any]
) -> AsyncIterator[tuple[httpx.AsyncClient, str, httpx.Response]]:
    """Open the page as a payer's browser does (the link with ``?client_token=``): a fresh
    cookie jar, the redirect followed."""
    async with httpx.AsyncClient(transport=http._transport, base_url=str(http.base_url)) as browser:
        path = f"/status/{data['execution']['id']}"
        moved = await browser.get(path, params={"client_token": data["clientToken"]})
        assert moved.status_code == 303 and moved.headers["location"] == path
        cookie = moved.headers["set-cookie"]
        assert cookie.startswith(f"tw_ct_{data['execution']['id']}=")
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
        yield browser, path, await browser.get(path)


def scripts_are_same_origin_files_or_data(page: str) -> None:
    for tag in re.findall(r"<script[^>]*>", page):
        assert tag == '<script src="/assets/status.js" defer>' or 'type="application/json"' in tag


async def test_payer_sees_payment_pending_with_a_pay_link_then_the_result(
    http: httpx.AsyncClient, tenant: Tenant, engine: Any
) -> None:
    data = (await create(http, tenant, tenant.priced_wf)).json()["data"]
    async with open_status(http, data) as (browser, path, page):
        assert page.status_code == 200
        assert page.headers["content-security-policy"] == CSP
        assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
        scripts_are_same_origin_files_or_data(page.text)
        assert '<h1 id="workflow">Greeting</h1>' in page.text
        assert '<dd id="status">Waiting for payment</dd>' in page.text
        assert '<dd id="payment">Not paid yet</dd>' in page.text
        assert f'<p id="pay"><a id="pay-link" href="{data["checkoutUrl"]}">Pay</a>' in page.text
        assert "http-equiv=refresh" in page.text  # without JavaScript, it refreshes itself
        assert data["clientToken"] not in page.text

        await pay_via_webhook(http, engine, data["execution"])
        await wait_status(http, data["execution"]["id"], tenant.auth, "workflow_succeeded")
        done = (await browser.get(path)).text
        assert '<dd id="status">Done</dd>' in done and '<dd id="payment">Paid</dd>' in done
        assert '<p id="pay" hidden>' in done and "http-equiv=refresh" not in done
        assert "&quot;greeting&quot;: &quot;hello Ada&quot;" in done
        # The page's cookie opens the event stream too (what EventSource sends); an ended
        # execution's stream is its last state, then the end.
        stream = await browser.get(f"/v1/public/executions/{data['execution']['id']}/events")
        assert stream.status_code == 200 and '"status":"workflow_succeeded"' in stream.text


async def test_the_page_escapes_everything_it_shows(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    hostile = "<script>alert(1)</script>"
    wf = tenant.workflow({**GREETING, "name": f"Shop {hostile}", "output": "{said: request.name}"})
    data = (await create(http, tenant, wf, requestPayload={"name": f"</pre>{hostile}"})).json()[
        "data"
    ]
    await wait_status(http, data["execution"]["id"], tenant.auth, "workflow_succeeded")
    async with open_status(http, data) as (_browser, _path, page):
        assert hostile not in page.text
        assert "Shop &lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert "&lt;/pre&gt;&lt;script&gt;" in page.text
        scripts_are_same_origin_files_or_data(page.text)


async def test_a_failed_execution_shows_the_payer_safe_reason(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    wf = tenant.workflow(
        {
            **GREETING,
            "steps": [
                {
                    "id": "call",
                    "kind": "http",
                    "url": "http://127.0.0.2:9/x",
                    "retry": {"maxAttempts": 1},
                }
            ],
            "output": "steps.call",
        }  # fmt: skip
    )
    data = (await create(http, tenant, wf)).json()["data"]
    await wait_status(http, data["execution"]["id"], tenant.auth, "workflow_failed")
    async with open_status(http, data) as (_browser, _path, page):
        assert '<dd id="status">Failed</dd>' in page.text
        assert "step &#x27;call&#x27; failed" in page.text
        assert "127.0.0.2" not in page.text  # the organization's detail, never the payer's


async def test_without_a_valid_token_the_page_says_so(
    http: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    data = (await create(http, tenant, tenant.workflow(paused(0.1)))).json()["data"]
    other = (await create(http, other_tenant, other_tenant.free_wf)).json()["data"]
    path = f"/status/{data['execution']['id']}"
    assert (await http.get(path)).status_code == 401
    assert (await http.get(path, params={"client_token": "ct_forged.x"})).status_code == 401
    # Another execution's token opens only that one.
    wrong = await http.get(path, params={"client_token": other["clientToken"]})
    assert wrong.status_code == 401
    async with httpx.AsyncClient(
        transport=http._transport,
        base_url=str(http.base_url),
        cookies={f"tw_ct_{data['execution']['id']}": other["clientToken"]},
    ) as browser:
        crossed = await browser.get(path)
    assert crossed.status_code == 401
    assert "Waiting" not in crossed.text and "Greeting" not in crossed.text
