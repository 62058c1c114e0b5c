"""One test per hole found by the money-and-access review; each failed on the code before
it was closed. What each proves is in its docstring."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from temporalio import workflow
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHistory
from temporalio.worker import Replayer

from tests.helpers import CONVERTER, GREETING, Tenant, create, eventually, view, wait_status
from tests.history_text import decoded_history
from tests.money import assert_money_invariants, capture, charges, completed, send, steps_ran
from tests.processes import run_tollway
from tollway.views import CLIENT_FIELDS
from workflows.execution import ExecutionWorkflow
from workflows.models import PaymentEventKind, PaymentNotice

HISTORIES = Path(__file__).parent / "histories"
CALLBACK_FLOW: dict[str, Any] = {
    **GREETING,
    "steps": [
        {"id": "approve", "kind": "wait_for_callback", "timeoutSeconds": 30},
        {"id": "done", "kind": "transform", "expression": "steps.approve"},
    ],
    "output": "steps.done",
}

# -- 3. callback tokens are not computable from the run id -----------------------------------

_PROBED: list[str] = []


@workflow.defn(name="TollwayExecution", sandboxed=False)
class _RandomnessProbe:
    """Replayed over an execution's history, this computes what ``workflow.uuid4()`` yields
    for that run -- what anyone knowing the run id can compute -- the way tokens used to be
    made (two uuid4s in the workflow's init)."""

    @workflow.init
    def __init__(self, inp: dict[str, Any]) -> None:
        _PROBED.append(f"cb_{workflow.uuid4().hex}{workflow.uuid4().hex}")

    @workflow.run
    async def run(self, inp: dict[str, Any]) -> None:
        await workflow.wait_condition(lambda: False)


async def _run_randomness(history: WorkflowHistory) -> str:
    _PROBED.clear()
    replayer = Replayer(workflows=[_RandomnessProbe], data_converter=CONVERTER)
    await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert _PROBED, "the probe never ran"
    return _PROBED[0]


def _callback_tokens_in(text: str) -> set[str]:
    return set(re.findall(r"cb_[A-Za-z0-9_\-]{40,}", text))


async def test_probe_recomputes_the_tokens_of_the_old_scheme() -> None:
    """The attack works where tokens came from workflow randomness (a checked-in history of
    the old code): the run alone yields the token that history accepted."""
    path = HISTORIES / "queued_then_callback.json"
    history = WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
    recorded = history.to_json()
    import base64

    decoded = " ".join(
        base64.b64decode(chunk).decode("utf-8", "replace")
        for chunk in re.findall(r'"data": "([A-Za-z0-9+/=]+)"', recorded)
    )
    assert await _run_randomness(history) in _callback_tokens_in(decoded)


async def test_callback_token_is_not_derived_from_workflow_randomness(
    http: httpx.AsyncClient, client: Client, tenant: Tenant
) -> None:
    """Today's tokens come from an activity: the same probe over a new execution's history
    computes something else, and the token is recorded as an activity result."""
    eid = (await create(http, tenant, tenant.workflow(CALLBACK_FLOW))).json()["data"]["execution"][
        "id"
    ]
    waiting = await wait_status(http, eid, tenant.auth, "workflow_waiting")
    token = waiting["callbacks"]["approve"]["token"]
    history = await client.get_workflow_handle(eid).fetch_history()
    assert await _run_randomness(history) != token
    text = await decoded_history(client, eid)
    assert "callbacks.new_tokens" in text and token in text
    # The forged token the old scheme would give is refused; the real one works.
    forged = await _run_randomness(history)
    url = f"/v1/public/executions/{eid}/callbacks/approve"
    refused = await http.post(url, json={}, headers={"Authorization": f"Bearer {forged}"})
    assert refused.status_code == 401
    ok = await http.post(url, json={"ok": 1}, headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200
    await wait_status(http, eid, tenant.auth, "workflow_succeeded")


# -- 1 and 6. production takes money only through Stripe; no secret has a built-in value ----


def _start(process: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``tollway api|worker`` as a deployment starts it, with only ``env`` configured."""
    return run_tollway(process, cwd=tmp_path, env={"TEMPORAL_ADDRESS": "127.0.0.1:1", **env})


SECRETS = {
    "TOLLWAY_CLIENT_TOKEN_SECRET": "a-real-client-token-secret-123456",
    "TOLLWAY_LOCAL_WEBHOOK_SECRET": "whsec_a_real_local_secret_123456",
}


@pytest.mark.parametrize("process", ["api", "worker"])
def test_production_refuses_the_local_provider_at_start(process: str, tmp_path: Path) -> None:
    result = _start(process, tmp_path, TOLLWAY_ENV="production", **SECRETS)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"tollway {process}: ") and "TOLLWAY_PAYMENT_PROVIDER" in line


@pytest.mark.parametrize(
    ("process", "env", "named"),
    [
        ("api", {}, "TOLLWAY_CLIENT_TOKEN_SECRET"),
        (
            "api",
            {"TOLLWAY_CLIENT_TOKEN_SECRET": SECRETS["TOLLWAY_CLIENT_TOKEN_SECRET"]},
            "TOLLWAY_LOCAL_WEBHOOK_SECRET",
        ),
        ("api", {**SECRETS, "TOLLWAY_PAYMENT_PROVIDER": "stripe"}, "TOLLWAY_STRIPE_API_KEY"),
        (
            "api",
            {**SECRETS, "TOLLWAY_PAYMENT_PROVIDER": "stripe", "TOLLWAY_STRIPE_API_KEY": "sk_x"},
            "TOLLWAY_STRIPE_WEBHOOK_SECRET",
        ),
        ("worker", {"TOLLWAY_PAYMENT_PROVIDER": "stripe"}, "TOLLWAY_STRIPE_API_KEY"),
        (
            "api",
            {**SECRETS, "TOLLWAY_LOCAL_WEBHOOK_SECRET": "whsec_long_enough_secret_1,short"},
            "entry 2 of TOLLWAY_LOCAL_WEBHOOK_SECRET",
        ),
    ],
)
def test_a_missing_or_weak_secret_stops_the_process_naming_it(
    process: str, env: dict[str, str], named: str, tmp_path: Path
) -> None:
    result = _start(process, tmp_path, **env)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert named in line, line
    for value in env.values():
        if "secret" in value or value.startswith("sk_"):
            assert value not in result.stderr  # never print a secret


def test_settings_have_no_built_in_secret() -> None:
    from tollway.settings import Settings

    settings = Settings.model_validate({})
    assert settings.client_token_secret is None
    assert settings.local_webhook_secret is None
    assert settings.stripe_webhook_secret is None and settings.stripe_api_key is None


def test_dev_generates_its_secrets_once_privately(tmp_path: Path) -> None:
    from tollway.devstack import dev_secrets
    from tollway.settings import Settings

    path = tmp_path / "var" / "secrets.json"
    first = dev_secrets(path)
    assert set(first) == {
        "TOLLWAY_CLIENT_TOKEN_SECRET",
        "TOLLWAY_LOCAL_WEBHOOK_SECRET",
        "TOLLWAY_SECRETS_KEY",
        "TOLLWAY_PAYLOAD_KEYS",
    }
    assert os.stat(path).st_mode & 0o777 == 0o600
    from tollway.codec import parse_keys
    from tollway.org_secrets import cipher

    cipher(first["TOLLWAY_SECRETS_KEY"])  # usable keys, not just random text
    parse_keys(first["TOLLWAY_PAYLOAD_KEYS"])
    assert dev_secrets(path) == first  # reused by later runs
    assert dev_secrets(tmp_path / "other.json") != first  # random, not built in
    Settings.model_validate(
        {"client_token_secret": first["TOLLWAY_CLIENT_TOKEN_SECRET"]}
        | {"local_webhook_secret": first["TOLLWAY_LOCAL_WEBHOOK_SECRET"]}
        | {"payload_keys": first["TOLLWAY_PAYLOAD_KEYS"]}
    ).require("api")


def test_compose_takes_orders_only_through_stripe(repo_root: Path) -> None:
    import yaml

    from tollway.settings import Settings

    compose = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    for service in ("api", "worker"):
        env = compose["services"][service]["environment"]
        assert env["TOLLWAY_ENV"] == "production"
        assert env["TOLLWAY_PAYMENT_PROVIDER"] == "stripe"
        for required in ("TOLLWAY_STRIPE_API_KEY", "TOLLWAY_STRIPE_WEBHOOK_SECRET"):
            assert re.fullmatch(r"\$\{\w+:\?.+\}", env[required]), f"{required} must be required"
        assert "TOLLWAY_LOCAL_WEBHOOK_SECRET" not in env
    with pytest.raises(ValueError, match="TOLLWAY_PAYMENT_PROVIDER"):
        Settings.model_validate({"env": "production", "payment_provider": "local"})
    # With every required variable given a value, both processes have what they need.
    from tollway.codec import new_key_entry
    from tollway.org_secrets import new_key

    env = compose["services"]["api"]["environment"]
    values = {
        "TOLLWAY_PAYLOAD_KEYS": new_key_entry(),
        "TOLLWAY_SECRETS_KEY": new_key(),
        "TOLLWAY_STRIPE_API_KEY": "sk_test_placeholder_for_tests",
    }
    resolved = {
        name: values.get(name, "a-long-enough-value-0123456789")
        if isinstance(value, str) and value.startswith("${")
        else value
        for name, value in env.items()
    }
    settings = Settings.model_validate(
        {k.removeprefix("TOLLWAY_").lower(): v for k, v in resolved.items()}
    )
    settings.require("api")
    settings.require("worker")


# -- 2 and 4. the local checkout pays only local orders; only the order's checkout pays ------


async def _priced(http: httpx.AsyncClient, tenant: Tenant) -> dict[str, Any]:
    response = await create(http, tenant, tenant.priced_wf)
    assert response.status_code == 200, response.text
    execution: dict[str, Any] = response.json()["data"]["execution"]
    return execution


async def test_checkout_session_ids_are_random_not_derived(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    execution = await _priced(http, tenant)
    session_id = execution["checkoutSessionId"]
    material = f"cs_local:{execution['id']}:checkout"
    old = f"cs_local_{hashlib.sha256(material.encode()).hexdigest()[:24]}"
    assert session_id != old
    assert re.fullmatch(r"cs_local_[A-Za-z0-9_\-]{32}", session_id)  # 192 random bits
    guessed = await http.get(f"/checkout/{old}")
    assert guessed.status_code == 404


async def test_local_checkout_never_shows_another_providers_order(
    http: httpx.AsyncClient, engine: Engine, tenant: Tenant
) -> None:
    from sqlmodel import Session

    from tollway.tables import Order

    with Session(engine) as session:
        session.add(
            Order(
                id=f"ord_stripe_{tenant.org_id}",
                execution_id=f"exe_stripe_{tenant.org_id}",
                organization_id=tenant.org_id,
                workflow_id=tenant.priced_wf,
                workflow_version=1,
                amount=500,
                currency="usd",
                provider="stripe",
                checkout_session_id=f"cs_test_{tenant.org_id}",
            )
        )
        session.commit()
    page = await http.get(f"/checkout/cs_test_{tenant.org_id}")
    assert page.status_code == 404
    pay_form = await http.post(f"/checkout/cs_test_{tenant.org_id}/pay", data={"csrf": "x"})
    assert pay_form.status_code in {403, 404}
    with Session(engine) as session:  # made up for this test: leave nothing to reconcile
        session.delete(session.get(Order, f"ord_stripe_{tenant.org_id}"))
        session.commit()


def _notice(execution: dict[str, Any], **changes: Any) -> PaymentNotice:
    values: dict[str, Any] = {
        "event_id": f"evt_{os.urandom(8).hex()}",
        "kind": PaymentEventKind.PAID,
        "provider": "local",
        "checkout_session_id": execution["checkoutSessionId"],
        "payment_reference": f"pi_{os.urandom(8).hex()}",
        "amount": 500,
        "currency": "usd",
        "livemode": False,
    }
    return PaymentNotice(**{**values, **changes})


@pytest.mark.parametrize(
    "changes",
    [
        {"provider": "stripe"},
        {"checkout_session_id": "cs_local_someone_elses_session_00000000"},
        {"checkout_session_id": None},
        {"livemode": True},
        {"livemode": None},
    ],
    ids=["other provider", "other session", "no session", "live mode", "no mode"],
)
async def test_payment_from_another_checkout_is_ignored(
    http: httpx.AsyncClient,
    client: Client,
    engine: Engine,
    tenant: Tenant,
    changes: dict[str, Any],
) -> None:
    execution = await _priced(http, tenant)
    handle = client.get_workflow_handle_for(ExecutionWorkflow.run, execution["id"])
    result = await handle.execute_update(
        ExecutionWorkflow.payment_event, _notice(execution, **changes)
    )
    assert result.outcome == "ignored"
    assert (result.view.status.value, result.view.paymentStatus.value) == (
        "awaiting_payment",
        "pending",
    )
    await asyncio.sleep(0.3)
    assert not await steps_ran(client, execution["id"])
    # The order's own checkout still pays it.
    own = await handle.execute_update(
        ExecutionWorkflow.payment_event,
        _notice(execution, payment_reference=capture(engine, execution)),
    )
    assert own.outcome == "applied"
    await wait_status(http, execution["id"], tenant.auth, "workflow_succeeded")


# -- 5. the client view is an allowlist --------------------------------------------------------


async def test_client_view_and_stream_carry_only_the_allowlist(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    failing = tenant.workflow(
        {
            **GREETING,
            "steps": [
                {"id": "approve", "kind": "wait_for_callback", "timeoutSeconds": 30},
                {"id": "call", "kind": "http", "method": "GET", "url": "http://127.0.0.2:9/x"},
            ],
        }
    )
    data = (await create(http, tenant, failing, clientSafeMetadata={"m": 1})).json()["data"]
    eid, bearer = data["execution"]["id"], {"Authorization": f"Bearer {data['clientToken']}"}
    waiting = await wait_status(http, eid, tenant.auth, "workflow_waiting")
    seen = await wait_status(http, eid, bearer, "workflow_waiting")
    assert list(seen) == list(CLIENT_FIELDS)
    token = waiting["callbacks"]["approve"]["token"]
    await http.post(
        f"/v1/public/executions/{eid}/callbacks/approve",
        json={},
        headers={"Authorization": f"Bearer {token}"},
    )
    full = await wait_status(http, eid, tenant.auth, "workflow_failed", 30)
    assert "127.0.0.2" in full["statusReason"]  # the organization sees the detail
    ended = await wait_status(http, eid, bearer, "workflow_failed")
    assert list(ended) == list(CLIENT_FIELDS)
    assert ended["statusReason"] == "step 'call' failed"
    assert ended["clientSafeMetadata"] == {"m": 1}
    async with http.stream("GET", f"/v1/public/executions/{eid}/events", headers=bearer) as s:
        body = (await s.aread()).decode()
    events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
    assert events and all(list(e) == list(CLIENT_FIELDS) for e in events)
    assert "127.0.0.2" not in body and full["runId"] not in body


# -- 8. a late payment's refund shows in the view and the list --------------------------------


async def test_payment_after_close_shows_refunded_in_view_and_list(
    http: httpx.AsyncClient, client: Client, engine: Engine, tenant: Tenant
) -> None:
    execution = await _priced(http, tenant)
    cancelled = await http.post(
        f"/v1/public/executions/{execution['id']}/cancel", headers=tenant.auth
    )
    assert cancelled.json()["data"]["execution"]["paymentStatus"] == "cancelled"
    handle = client.get_workflow_handle(execution["id"])
    closed = await eventually(
        handle.describe, lambda d: d.status == WorkflowExecutionStatus.COMPLETED
    )
    assert closed.status == WorkflowExecutionStatus.COMPLETED
    late = capture(engine, execution)
    response = await send(http, completed(execution, late))
    assert response.json()["data"]["outcome"] == "late_payment_refunded"
    await eventually(
        lambda: asyncio.sleep(0, charges(engine, execution["id"])),
        lambda rows: bool(rows) and all(r.refunded_at is not None for r in rows),
    )
    final = await eventually(
        lambda: view(http, execution["id"], tenant.auth),
        lambda r: r.json()["data"]["execution"]["paymentStatus"] == "refunded",
    )
    shown = final.json()["data"]["execution"]
    assert shown["status"] == "workflow_cancelled" and shown["paymentStatus"] == "refunded"
    assert shown["statusReason"].endswith("a payment that arrived after it ended was refunded")
    listed = await http.get(
        f"/v1/public/workflows/{tenant.priced_wf}/executions", headers=tenant.auth
    )
    [item] = [i for i in listed.json()["data"]["executions"] if i["id"] == execution["id"]]
    assert item["paymentStatus"] == "refunded" and item["statusReason"] == shown["statusReason"]
    await assert_money_invariants(client, engine, shown)


async def test_payment_racing_a_cancel_is_refunded_and_shown_whichever_way_it_lands(
    http: httpx.AsyncClient, client: Client, engine: Engine, tenant: Tenant
) -> None:
    """A payment sent while a cancel is being carried out lands in the closing workflow (which
    refunds it and records ``refunded`` on itself, search attributes included) or after it
    closed (the late-payment refund): either way the view says refunded."""
    from temporalio.client import WorkflowUpdateStage

    from workflows import search_attributes as sa
    from workflows.models import CancelInput

    in_workflow = 0
    for _ in range(3):
        execution = await _priced(http, tenant)
        handle = client.get_workflow_handle_for(ExecutionWorkflow.run, execution["id"])
        await handle.start_update(
            ExecutionWorkflow.cancel,
            CancelInput(by="a racing test"),
            id="cancel",
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
        response = await send(http, completed(execution, capture(engine, execution)))
        assert response.status_code == 200, response.text
        final = await eventually(
            lambda eid=execution["id"]: view(http, eid, tenant.auth),
            lambda r: r.json()["data"]["execution"]["paymentStatus"] == "refunded",
        )
        shown = final.json()["data"]["execution"]
        assert (shown["status"], shown["paymentStatus"]) == ("workflow_cancelled", "refunded")
        assert shown["statusReason"].endswith("a payment that arrived after it ended was refunded")
        if response.json()["data"]["outcome"] == "delivered":
            in_workflow += 1
            described = await handle.describe()
            assert described.typed_search_attributes.get(sa.PAYMENT_STATUS) == "refunded"
        await assert_money_invariants(client, engine, shown)
    print(f"{in_workflow} of 3 payments landed in the closing workflow")
