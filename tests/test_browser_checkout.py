"""A payer in a real browser: headless Chromium (Debian's package) opens the local checkout
page served over HTTP on loopback, clicks Pay, and the execution succeeds."""

from __future__ import annotations

import asyncio
import shutil
import socket
from urllib.parse import urlsplit

import pytest
import uvicorn
from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.worker import Worker

from api.app import build_deps, create_app
from tests.helpers import Tenant, create, wait_status
from tests.money import assert_money_invariants, charges
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


async def test_payer_clicks_pay_in_chromium(
    client: Client, engine: Engine, settings: Settings, tenant: Tenant, worker: Worker
) -> None:
    from playwright.async_api import async_playwright

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    served = settings.model_copy(update={"public_base_url": f"http://127.0.0.1:{port}"})
    app = create_app(served, build_deps(served, client, engine))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        import httpx

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            response = await create(http, tenant, tenant.priced_wf)
            assert response.status_code == 200, response.text
            execution = response.json()["data"]["execution"]
            # The session worker announces its own public base URL; serve the same path here.
            path = urlsplit(response.json()["data"]["checkoutUrl"]).path
            assert path == f"/checkout/{execution['checkoutSessionId']}"
            url = f"http://127.0.0.1:{port}{path}"

            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                try:
                    page = await browser.new_page(java_script_enabled=False)
                    await page.goto(url)
                    assert await page.text_content("#workflow") == "Greeting"
                    assert await page.text_content("#amount") == "5.00 USD"
                    assert await page.text_content("#status") == "awaiting_payment"
                    await page.click("#pay")
                    await page.wait_for_url(f"{url}?result=paid")
                    assert "payment was received" in (await page.content())
                finally:
                    await browser.close()

            done = await wait_status(http, execution["id"], tenant.auth, "workflow_succeeded")
            assert done["paymentStatus"] == "paid"
            assert len(charges(engine, execution["id"])) == 1
            await assert_money_invariants(client, engine, done)
    finally:
        server.should_exit = True
        await serving
