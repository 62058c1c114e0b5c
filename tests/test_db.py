"""The database layer on SQLite by default and on PostgreSQL when TOLLWAY_TEST_DATABASE_URL
is set (CI sets it)."""

from __future__ import annotations

import concurrent.futures
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session, select

from activities.local_provider import LocalPaymentProvider
from activities.payments import PaymentActivities
from tests.helpers import GREETING, make_tenant
from tollway import admin
from tollway.definitions import Price, parse_definition
from tollway.ledger import OrderLedger
from tollway.tables import ApiToken, Order
from workflows.models import CheckoutRequest


def test_backend_is_the_one_asked_for(engine: Engine, database_url: str) -> None:
    expected = "postgresql" if database_url.startswith("postgres") else "sqlite"
    assert engine.dialect.name == expected


def test_token_is_stored_only_as_hash(engine: Engine) -> None:
    tenant = make_tenant(engine)
    with Session(engine) as session:
        row = session.exec(select(ApiToken).where(ApiToken.id == tenant.token_id)).one()
    assert row.token_hash == admin.hash_token(tenant.token) != tenant.token
    assert tenant.token not in repr(row.model_dump())
    assert admin.find_token(engine, tenant.token) is not None
    assert admin.find_token(engine, tenant.token + "x") is None
    assert admin.find_token(engine, "not-even-prefixed") is None


def test_versions_are_kept(engine: Engine) -> None:
    tenant = make_tenant(engine)
    v2 = admin.publish_version(engine, tenant.free_wf, parse_definition({**GREETING, "name": "v2"}))
    assert v2 == 2
    record = admin.find_workflow(engine, tenant.free_wf)
    assert record is not None and record.version == 2 and record.definition.name == "v2"


def test_concurrent_checkouts_for_one_execution_make_one_order(engine: Engine) -> None:
    tenant = make_tenant(engine)
    payments = PaymentActivities(
        LocalPaymentProvider(engine, "http://127.0.0.1:8000"), OrderLedger(engine)
    )
    request = CheckoutRequest(
        execution_id=f"exe_{tenant.org_id}",
        organization_id=tenant.org_id,
        public_workflow_id=tenant.priced_wf,
        workflow_version=1,
        workflow_name="Greeting",
        price=Price(amount=500, currency="usd"),
        expires_at=datetime.now(UTC) + timedelta(minutes=30),
    )
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        sessions = list(pool.map(lambda _: payments.open_checkout(request), range(8)))
    assert len({s.checkout_session_id for s in sessions}) == 1
    assert len({s.order_id for s in sessions}) == 1
    with Session(engine) as session:
        orders = session.exec(select(Order).where(Order.organization_id == tenant.org_id)).all()
    assert len(orders) == 1
    assert (orders[0].amount, orders[0].currency, orders[0].status) == (500, "usd", "pending")
    with Session(engine) as session:  # no execution stands behind it: leave nothing to reconcile
        session.delete(session.get(Order, orders[0].id))
        session.commit()
