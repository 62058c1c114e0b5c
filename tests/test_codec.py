"""Private payloads: Temporal holds only ciphertext; the codec endpoint decodes for operators
(API token with the ``codec`` scope, or their browser session) and nobody else."""

from __future__ import annotations

import base64
import json

import httpx
from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from tests.helpers import Tenant, create, wait_status
from tests.history_text import _payloads
from tollway import admin

MARKER = "marker-ada-lovelace-7c1f"


async def test_temporal_holds_only_ciphertext_and_operators_decode_it(
    http: httpx.AsyncClient,
    client: Client,
    engine: Engine,
    tenant: Tenant,
    temporal_address: str,
) -> None:
    response = await create(http, tenant, tenant.free_wf, requestPayload={"name": MARKER})
    eid = response.json()["data"]["execution"]["id"]
    done = await wait_status(http, eid, tenant.auth, "workflow_succeeded")
    assert MARKER in done["responsePayload"]["greeting"]

    # What the Temporal server stores, read without the key.
    raw = await Client.connect(temporal_address, data_converter=pydantic_data_converter)
    history = await raw.get_workflow_handle(eid).fetch_history()
    payloads = [p for e in history.events for p in _payloads(e)]
    encrypted = [p for p in payloads if p.metadata.get("encoding") == b"binary/encrypted"]
    assert len(encrypted) >= 5  # input, updates, memo, activity inputs and results, result
    assert all(MARKER.encode() not in p.data for p in payloads)
    described = await raw.get_workflow_handle(eid).describe()
    memo = described.raw_description.workflow_execution_info.memo.fields["state"]
    assert memo.metadata["encoding"] == b"binary/encrypted"

    body = {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                "data": base64.b64encode(p.data).decode(),
            }
            for p in encrypted
        ]
    }
    _, operator = admin.create_token(engine, tenant.org_id, "100/second", ("codec",))
    decoded = await http.post(
        "/codec/decode", json=body, headers={"Authorization": f"Bearer {operator}"}
    )
    assert decoded.status_code == 200, decoded.text
    texts = [base64.b64decode(p["data"]).decode() for p in decoded.json()["payloads"]]
    assert any(MARKER in t for t in texts)
    assert all(
        base64.b64decode(p["metadata"]["encoding"]) == b"json/plain"
        for p in decoded.json()["payloads"]
    )

    # Not an operator: refused.
    assert (await http.post("/codec/decode", json=body)).status_code == 401
    caller = await http.post("/codec/decode", json=body, headers=tenant.auth)
    assert caller.status_code == 403 and MARKER not in caller.text

    # Encode round-trips through decode.
    plain = {
        "payloads": [
            {
                "metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
                "data": base64.b64encode(json.dumps(MARKER).encode()).decode(),
            }
        ]
    }
    sealed = await http.post(
        "/codec/encode", json=plain, headers={"Authorization": f"Bearer {operator}"}
    )
    assert MARKER not in base64.b64decode(sealed.json()["payloads"][0]["data"]).decode("latin-1")
    opened = await http.post(
        "/codec/decode", json=sealed.json(), headers={"Authorization": f"Bearer {operator}"}
    )
    assert json.loads(base64.b64decode(opened.json()["payloads"][0]["data"])) == MARKER

    # The UI in a browser: a session cookie from /codec/login, CORS for the UI's origin only.
    ui = {"Origin": "http://127.0.0.1:8233"}
    preflight = await http.options("/codec/decode", headers=ui)
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "http://127.0.0.1:8233"
    assert preflight.headers["access-control-allow-credentials"] == "true"
    foreign = await http.options("/codec/decode", headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403 and "access-control-allow-origin" not in foreign.headers
    browser = httpx.AsyncClient(transport=http._transport, base_url=str(http.base_url))
    async with browser:
        refused = await browser.post("/codec/login", data={"token": tenant.token})
        assert refused.status_code == 403 and "set-cookie" not in refused.headers
        login = await browser.post("/codec/login", data={"token": operator})
        assert login.status_code == 303
        cookie = login.cookies["tollway_codec"]
        by_cookie = await browser.post("/codec/decode", json=body, headers=ui)
        assert by_cookie.status_code == 200
        assert by_cookie.headers["access-control-allow-origin"] == "http://127.0.0.1:8233"
    forged = await http.post(
        "/codec/decode", json=body, headers={"Cookie": f"tollway_codec={cookie[:-4]}0000"}
    )
    assert forged.status_code == 401
    valid = await http.post(
        "/codec/decode", json=body, headers={"Cookie": f"tollway_codec={cookie}"}
    )
    assert valid.status_code == 200
    [row] = [t for t in admin.list_tokens(engine, tenant.org_id) if "codec" in t.scopes]
    admin.revoke_token(engine, row.id)
    revoked = await http.post(
        "/codec/decode", json=body, headers={"Cookie": f"tollway_codec={cookie}"}
    )
    assert revoked.status_code == 401
