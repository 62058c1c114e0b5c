"""`tollway admin reconcile`: each kind of discrepancy is found (and only where it is), and
the whole suite's money -- every test before this module's last one -- reconciles clean."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, SQLModel
from temporalio.client import Client

from tests.helpers import GREETING, PAYLOAD_KEYS, PRICE, Tenant, create, wait_status
from tests.money import assert_money_invariants, pay_via_webhook
from tests.processes import run_tollway
from tollway.ledger import OrderLedger
from tollway.reconcile import Discrepancy, LocalBook, Reconciler
from tollway.tables import LocalCharge, Order, Payment, utcnow
from workflows.models import RefundRequest


async def reconcile(engine: Engine, client: Client) -> list[Discrepancy]:
    report = await Reconciler(engine, client, LocalBook(engine)).run(timedelta(hours=1))
    assert report.checked > 0
    return report.discrepancies


def about(found: list[Discrepancy], execution_id: str) -> list[str]:
    return sorted(d.kind for d in found if d.executionId == execution_id)


@pytest.fixture
def made_up(engine: Engine) -> Iterator[list[SQLModel]]:
    """Rows a test invents to stage a discrepancy; deleted afterwards."""
    rows: list[SQLModel] = []
    yield rows
    with Session(engine) as session:
        for row in rows:
            merged = session.merge(row)
            session.delete(merged)
        session.commit()


def add(engine: Engine, made_up: list[SQLModel], row: SQLModel) -> None:
    with Session(engine) as session:
        session.add(row)
        session.commit()
        session.refresh(row)
    made_up.append(row)


async def priced(http: httpx.AsyncClient, tenant: Tenant, wf: str) -> dict[str, Any]:
    response = await create(http, tenant, wf)
    assert response.status_code == 200, response.text
    execution: dict[str, Any] = response.json()["data"]["execution"]
    return execution


async def test_terminated_paid_execution_is_listed_until_refunded(
    http: httpx.AsyncClient, client: Client, engine: Engine, tenant: Tenant
) -> None:
    wf = tenant.workflow(
        {**GREETING, "price": PRICE, "steps": [{"id": "wait", "kind": "delay", "seconds": 60}]}
    )
    execution = await priced(http, tenant, wf)
    reference = await pay_via_webhook(http, engine, execution)
    await wait_status(http, execution["id"], tenant.auth, "workflow_running")
    assert about(await reconcile(engine, client), execution["id"]) == []
    await client.get_workflow_handle(execution["id"]).terminate("operator test")
    [found] = [d for d in await reconcile(engine, client) if d.executionId == execution["id"]]
    assert found.kind == "paid_not_settled" and found.paymentReference == reference
    assert "terminated" in found.detail
    # Settled the way an operator's refund does it: the provider, then the ledger.
    book = LocalBook(engine)
    from activities.local_provider import LocalPaymentProvider

    refund = RefundRequest(
        execution_id=execution["id"],
        provider="local",
        payment_reference=reference,
        amount=500,
        currency="usd",
        reason="terminated by an operator",
    )
    OrderLedger(engine).record_refund(
        refund, LocalPaymentProvider(engine, "http://unused").refund(refund)
    )
    assert book.refunded(reference) is True
    assert about(await reconcile(engine, client), execution["id"]) == []


async def test_unrefunded_extra_payment_orphan_charge_missing_execution_and_refund_mismatch(
    http: httpx.AsyncClient,
    client: Client,
    engine: Engine,
    tenant: Tenant,
    made_up: list[SQLModel],
) -> None:
    execution = await priced(http, tenant, tenant.priced_wf)
    await pay_via_webhook(http, engine, execution)
    done = await wait_status(http, execution["id"], tenant.auth, "workflow_succeeded")
    await assert_money_invariants(client, engine, done)
    eid = execution["id"]
    order = OrderLedger(engine).by_execution(eid)
    assert order is not None
    assert about(await reconcile(engine, client), eid) == []

    hour_ago = utcnow() - timedelta(minutes=50)
    add(engine, made_up, Payment(  # a duplicate nobody refunded
        payment_reference=f"pi_dup_{eid}", order_id=order.id, execution_id=eid,
        provider="local", amount=500, currency="usd", received_at=hour_ago,
    ))  # fmt: skip
    add(engine, made_up, Payment(  # refunded in the ledger, not at the provider
        payment_reference=f"pi_ledger_only_{eid}", order_id=order.id, execution_id=eid,
        provider="local", amount=500, currency="usd", received_at=hour_ago,
        refund_reference="re_x", refunded_at=hour_ago,
    ))  # fmt: skip
    add(engine, made_up, LocalCharge(
        payment_reference=f"pi_ledger_only_{eid}", execution_id=eid, amount=500, currency="usd",
    ))  # fmt: skip
    orphan = f"exe_orphan_{tenant.org_id}"
    add(engine, made_up, LocalCharge(
        payment_reference=f"pi_orphan_{eid}", execution_id=orphan, amount=500, currency="usd",
    ))  # fmt: skip
    ghost = f"exe_ghost_{tenant.org_id}"
    add(engine, made_up, Order(
        id=f"ord_ghost_{tenant.org_id}", execution_id=ghost, organization_id=tenant.org_id,
        workflow_id=tenant.priced_wf, workflow_version=1, amount=500, currency="usd",
        provider="local", status="paid", payment_reference=f"pi_ghost_{eid}",
    ))  # fmt: skip

    found = await reconcile(engine, client)
    assert about(found, eid) == ["refund_not_at_provider", "refund_pending"]
    assert about(found, orphan) == ["payment_without_order"]
    assert about(found, ghost) == ["execution_missing"]


def test_cli_prints_the_report_and_exits_1_on_discrepancies(
    database_url: str, temporal_address: str, engine: Engine, made_up: list[SQLModel]
) -> None:
    ghost = "exe_ghost_for_the_cli"
    add(engine, made_up, Order(
        id="ord_ghost_for_the_cli", execution_id=ghost, organization_id="org_x",
        workflow_id="wf_x", workflow_version=1, amount=100, currency="eur", provider="local",
    ))  # fmt: skip
    result = run_cli(database_url, temporal_address)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {"discrepancies", "checked"} and report["checked"] >= 1
    assert {"kind": "execution_missing", "executionId": ghost}.items() <= next(
        d for d in report["discrepancies"] if d["executionId"] == ghost
    ).items()


def run_cli(database_url: str, temporal_address: str) -> subprocess.CompletedProcess[str]:
    return run_tollway(
        "admin",
        "reconcile",
        "--json",
        timeout=120,
        env={
            "DATABASE_URL": database_url,
            "TEMPORAL_ADDRESS": temporal_address,
            "TOLLWAY_PAYLOAD_KEYS": PAYLOAD_KEYS,
            "PATH": "/usr/bin:/bin",
        },
    )


@pytest.mark.after_everything
def test_the_whole_suite_reconciles_clean(database_url: str, temporal_address: str) -> None:
    result = run_cli(database_url, temporal_address)
    report = json.loads(result.stdout)
    assert report["discrepancies"] == [], json.dumps(report["discrepancies"], indent=1)
    assert result.returncode == 0 and report["checked"] > 0
