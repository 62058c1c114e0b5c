"""A payer in a real browser: headless Chromium (Debian's package) opens the local checkout
page served over HTTP on loopback, clicks Pay, lands on the status page, and the execution
succeeds; with JavaScript on, the status page follows the execution live, without a reload."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import pytest
import uvicorn
from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.worker import Worker

from api.app import build_deps, create_app
from tests.helpers import Tenant, create, wait_status
from tests.money import assert_money_invariants, charges, pay_via_webhook
from tollway.settings import Settings

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)"
)


@asynccontextmanager
async def served_api(settings: Settings, client: Client, engine: Engine) -> AsyncIterator[str]:
    """The API under uvicorn on a loopback port, in the test's event loop (so the session
    worker keeps running), announcing that port as its public base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    served = settings.model_copy(update={"public_base_url": base})
    app = create_app(served, build_deps(served, client, engine))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        yield base
    finally:
        server.should_exit = True
        await serving


async def test_payer_clicks_pay_in_chromium(
    client: Client, engine: Engine, settings: Settings, tenant: Tenant, worker: Worker
) -> None:
    from playwright.async_api import async_playwright

    async with served_api(settings, client, engine) as base:
        import httpx

        async with httpx.AsyncClient(base_url=base) as http:
            response = await create(http, tenant, tenant.priced_wf)
            assert response.status_code == 200, response.text
            execution = response.json()["data"]["execution"]
            # The session worker announces its own public base URL; serve the same path here.
            path = urlsplit(response.json()["data"]["checkoutUrl"]).path
            assert path == f"/checkout/{execution['checkoutSessionId']}"
            url = f"{base}{path}"

            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                try:
                    page = await browser.new_page(java_script_enabled=False)
                    await page.goto(url)
                    assert await page.text_content("#workflow") == "Greeting"
                    assert await page.text_content("#amount") == "5.00 USD"
                    assert await page.text_content("#status") == "awaiting_payment"
                    await page.click("#pay")
                    # Paid: on to the status page, the token moved into a cookie.
                    await page.wait_for_url(f"{base}/status/{execution['id']}")
                    assert await page.text_content("#workflow") == "Greeting"
                    # Without JavaScript the page is the state when it was rendered; reloading
                    # (as its refresh does) shows the execution move on to its end.
                    for _ in range(100):
                        if await page.text_content("#status") == "Done":
                            break
                        await asyncio.sleep(0.1)
                        await page.reload()
                    assert await page.text_content("#status") == "Done"
                    assert await page.text_content("#payment") == "Paid"
                finally:
                    await browser.close()

            done = await wait_status(http, execution["id"], tenant.auth, "workflow_succeeded")
            assert done["paymentStatus"] == "paid"
            assert len(charges(engine, execution["id"])) == 1
            await assert_money_invariants(client, engine, done)


async def test_status_page_goes_from_awaiting_payment_to_done_live_in_chromium(
    client: Client, engine: Engine, settings: Settings, tenant: Tenant, worker: Worker
) -> None:
    import httpx
    from playwright.async_api import async_playwright

    async with served_api(settings, client, engine) as base:
        async with httpx.AsyncClient(base_url=base) as http:
            data = (await create(http, tenant, tenant.priced_wf)).json()["data"]
            execution = data["execution"]
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                try:
                    page = await browser.new_page(java_script_enabled=True)
                    errors: list[str] = []
                    page.on(
                        "console", lambda m: errors.append(m.text) if m.type == "error" else None
                    )
                    await page.goto(
                        f"{base}/status/{execution['id']}?client_token={data['clientToken']}"
                    )
                    assert page.url == f"{base}/status/{execution['id']}"  # token out of the URL
                    assert await page.text_content("#status") == "Waiting for payment"
                    assert await page.is_visible("#pay-link")
                    # Wait for the live stream to be open, then mark this page load.
                    # (Selectors, not wait_for_function: the page's CSP forbids eval.)
                    await page.wait_for_selector("#execution[data-status='awaiting_payment']")
                    await page.evaluate("window.sameLoad = true")

                    await pay_via_webhook(http, engine, execution)

                    await page.wait_for_selector(
                        "#execution[data-status='workflow_succeeded']", timeout=30_000
                    )
                    assert await page.text_content("#status") == "Done"
                    assert await page.evaluate("window.sameLoad === true")  # never reloaded
                    assert await page.text_content("#payment") == "Paid"
                    assert not await page.is_visible("#pay")
                    assert "hello Ada" in (await page.text_content("#result") or "")
                    assert errors == []  # the CSP let the page's own script run, nothing else
                finally:
                    await browser.close()
            done = await wait_status(http, execution["id"], tenant.auth, "workflow_succeeded")
            await assert_money_invariants(client, engine, done)
