"""The local checkout page: what it shows, escaping, CSRF, Pay and Cancel."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from sqlalchemy import Engine
from temporalio.client import Client

from api.client_tokens import verify
from tests.helpers import CLIENT_TOKEN_SECRET, GREETING, PRICE, Tenant, create, wait_status
from tests.money import assert_money_invariants, charges


async def open_checkout(
    http: httpx.AsyncClient, tenant: Tenant, wf: str | None = None
) -> tuple[dict[str, Any], str, str]:
    execution = (await create(http, tenant, wf or tenant.priced_wf)).json()["data"]["execution"]
    path = f"/checkout/{execution['checkoutSessionId']}"
    page = await http.get(path)
    assert page.status_code == 200
    match = re.search(r"name=csrf value='([0-9a-f]+)'", page.text)
    assert match, page.text
    return execution, path, match.group(1)


async def test_page_shows_the_order_escaped_with_strict_headers(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    wf = tenant.workflow(
        {
            **GREETING,
            "name": "<script>alert(1)</script>&Co",
            "price": {"amount": 1999, "currency": "eur"},
        }
    )
    execution = (await create(http, tenant, wf)).json()["data"]["execution"]
    page = await http.get(f"/checkout/{execution['checkoutSessionId']}")
    assert page.status_code == 200
    assert "<script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;Co" in page.text
    assert "19.99 EUR" in page.text and "awaiting_payment" in page.text
    assert "<script" not in page.text.lower()  # works without JavaScript
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")


async def test_unknown_session_is_404(http: httpx.AsyncClient) -> None:
    assert (await http.get("/checkout/cs_local_nope")).status_code == 404


async def test_forms_without_a_valid_token_or_from_another_origin_are_refused(
    http: httpx.AsyncClient, engine: Engine, tenant: Tenant
) -> None:
    execution, path, token = await open_checkout(http, tenant)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    cookie = http.cookies.get("tollway_csrf")
    attempts = [
        ({**form}, "csrf=" + token, {}),  # no cookie
        ({**form}, "csrf=" + "0" * 64, {"tollway_csrf": cookie}),  # wrong token
        ({**form, "Origin": "https://evil.example"}, "csrf=" + token, {"tollway_csrf": cookie}),
        ({**form, "Origin": "null"}, "csrf=" + token, {}),  # sandboxed frame: no cookie
    ]
    for headers, content, cookies in attempts:
        bare = httpx.AsyncClient(
            transport=http._transport, base_url=str(http.base_url), cookies=cookies
        )
        async with bare:
            response = await bare.post(f"{path}/pay", content=content, headers=headers)
        assert response.status_code == 403, (headers, cookies)
    assert charges(engine, execution["id"]) == []
    still = await wait_status(http, execution["id"], tenant.auth, "awaiting_payment", 0.3)
    assert still["paymentStatus"] == "pending"


async def test_pay_runs_the_execution_through_the_webhook_path(
    http: httpx.AsyncClient, client: Client, engine: Engine, tenant: Tenant
) -> None:
    execution, path, token = await open_checkout(http, tenant)
    response = await http.post(f"{path}/pay", data={"csrf": token})
    assert response.status_code == 303
    # On to the payer's status page, with a client token for this execution.
    location = urlsplit(response.headers["location"])
    assert location.path == f"/status/{execution['id']}"
    [given] = parse_qs(location.query)["client_token"]
    assert verify(CLIENT_TOKEN_SECRET, given) == execution["id"]
    done = await wait_status(http, execution["id"], tenant.auth, "workflow_succeeded")
    [charge] = charges(engine, execution["id"])
    assert (charge.amount, charge.currency, charge.refunded_at) == (500, "usd", None)
    await assert_money_invariants(client, engine, done)
    page = await http.get(path)
    assert "workflow_succeeded" in page.text and "<button id=pay" not in page.text
    again = await http.post(f"{path}/pay", data={"csrf": token})  # nothing to pay any more
    assert again.status_code == 303 and len(charges(engine, execution["id"])) == 1


async def test_cancel_expires_the_session(
    http: httpx.AsyncClient, client: Client, engine: Engine, tenant: Tenant
) -> None:
    execution, path, token = await open_checkout(http, tenant)
    response = await http.post(f"{path}/cancel", data={"csrf": token})
    assert response.status_code == 303
    done = await wait_status(http, execution["id"], tenant.auth, "workflow_cancelled")
    assert done["paymentStatus"] == "expired"
    assert charges(engine, execution["id"]) == []
    await assert_money_invariants(client, engine, done)


async def test_expired_checkout_takes_no_payment(
    http: httpx.AsyncClient, engine: Engine, tenant: Tenant
) -> None:
    wf = tenant.workflow({**GREETING, "price": PRICE, "paymentTimeoutSeconds": 1})
    execution, path, token = await open_checkout(http, tenant, wf)
    await wait_status(http, execution["id"], tenant.auth, "workflow_cancelled", 15)
    response = await http.post(f"{path}/pay", data={"csrf": token})
    assert response.status_code == 303
    assert charges(engine, execution["id"]) == []
    assert "<button id=pay" not in (await http.get(path)).text
