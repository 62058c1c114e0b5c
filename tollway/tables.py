"""Database tables. Touched by the admin path, the API's auth lookups and activities only;
a row never travels as a Temporal payload."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class Organization(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(index=True, max_length=200)
    created_at: datetime = Field(default_factory=utcnow)


class ApiToken(SQLModel, table=True):
    """Only the SHA-256 of a token is stored; the token itself is shown once, at creation."""

    __tablename__ = "api_token"

    id: str = Field(primary_key=True, max_length=40)
    organization_id: str = Field(foreign_key="organization.id", index=True, max_length=40)
    token_hash: str = Field(unique=True, index=True, max_length=64)
    token_prefix: str = Field(max_length=16)
    scopes: list[str] = Field(sa_column=Column(JSON, nullable=False))
    rate_limit: str = Field(max_length=32)
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None


class PublicWorkflow(SQLModel, table=True):
    __tablename__ = "public_workflow"

    id: str = Field(primary_key=True, max_length=40)
    organization_id: str = Field(foreign_key="organization.id", index=True, max_length=40)
    current_version: int = 1
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class WorkflowVersion(SQLModel, table=True):
    """Every stored version of a definition; executions pin the version they started with."""

    __tablename__ = "workflow_version"
    __table_args__ = (UniqueConstraint("workflow_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    workflow_id: str = Field(foreign_key="public_workflow.id", index=True, max_length=40)
    version: int
    definition: dict[str, object] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class Order(SQLModel, table=True):
    """One order per priced execution, mirroring its money transitions for reconciliation.

    ``status``: pending → paid → refunded, or pending → expired | cancelled | failed.
    """

    id: str = Field(primary_key=True, max_length=40)
    execution_id: str = Field(unique=True, index=True, max_length=64)
    organization_id: str = Field(index=True, max_length=40)
    workflow_id: str = Field(index=True, max_length=40)
    workflow_version: int
    workflow_name: str = Field(default="", max_length=200)
    amount: int
    currency: str = Field(max_length=3)
    status: str = Field(default="pending", max_length=20)
    provider: str = Field(max_length=20)
    checkout_session_id: str | None = Field(default=None, index=True, max_length=255)
    checkout_url: str | None = Field(default=None, max_length=2000)
    payment_reference: str | None = Field(default=None, max_length=255)
    refund_reference: str | None = Field(default=None, max_length=255)
    expires_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    paid_at: datetime | None = None
    refunded_at: datetime | None = None
    closed_at: datetime | None = None


class Payment(SQLModel, table=True):
    """Every payment received for an order, including duplicates and late ones, and its
    refund. The order's own payment is the one named by ``Order.payment_reference``."""

    payment_reference: str = Field(primary_key=True, max_length=255)
    order_id: str | None = Field(default=None, index=True, max_length=40)
    execution_id: str = Field(index=True, max_length=64)
    provider: str = Field(max_length=20)
    amount: int
    currency: str = Field(max_length=3)
    received_at: datetime = Field(default_factory=utcnow)
    refund_reference: str | None = Field(default=None, max_length=255)
    refunded_at: datetime | None = None
    refund_reason: str | None = Field(default=None, max_length=500)


class PaymentEvent(SQLModel, table=True):
    """Webhook events already handled: a repeated event id has no second effect."""

    __tablename__ = "payment_event"

    id: str = Field(primary_key=True, max_length=255)
    provider: str = Field(max_length=20)
    type: str = Field(max_length=100)
    execution_id: str | None = Field(default=None, index=True, max_length=64)
    outcome: str = Field(default="", max_length=100)
    received_at: datetime = Field(default_factory=utcnow)


class LocalCharge(SQLModel, table=True):
    """The local provider's own bank: money it captured and refunded (the stand-in for what
    Stripe would hold)."""

    __tablename__ = "local_charge"

    payment_reference: str = Field(primary_key=True, max_length=255)
    execution_id: str = Field(index=True, max_length=64)
    checkout_session_id: str | None = Field(default=None, max_length=255)
    amount: int
    currency: str = Field(max_length=3)
    captured_at: datetime = Field(default_factory=utcnow)
    refund_id: str | None = Field(default=None, max_length=255)
    refunded_at: datetime | None = None


class OrgSecret(SQLModel, table=True):
    """A step secret of one organization: its value encrypted (Fernet), the hosts it may be
    sent to in clear."""

    __tablename__ = "org_secret"

    organization_id: str = Field(primary_key=True, foreign_key="organization.id", max_length=40)
    name: str = Field(primary_key=True, max_length=64)
    ciphertext: str = Field(max_length=20_000)
    allow_hosts: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class WebhookEndpoint(SQLModel, table=True):
    """Where an organization receives its executions' status events (Standard Webhooks). The
    signing secret is stored encrypted (Fernet, ``TOLLWAY_SECRETS_KEY``) and shown once."""

    __tablename__ = "webhook_endpoint"

    id: str = Field(primary_key=True, max_length=40)
    organization_id: str = Field(foreign_key="organization.id", index=True, max_length=40)
    url: str = Field(max_length=2000)
    secret_ciphertext: str = Field(max_length=2000)
    events: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class WebhookDelivery(SQLModel, table=True):
    """One event for one endpoint (a resend is a new delivery of the same event id)."""

    __tablename__ = "webhook_delivery"

    id: str = Field(primary_key=True, max_length=64)
    endpoint_id: str = Field(index=True, max_length=40)
    organization_id: str = Field(index=True, max_length=40)
    event_id: str = Field(index=True, max_length=100)
    event_type: str = Field(max_length=64)
    execution_id: str = Field(index=True, max_length=64)
    body: str = Field(sa_column=Column(Text, nullable=False))  # the JSON sent (and resent)
    status: str = Field(default="pending", max_length=20)  # pending, succeeded, failed
    attempts: int = 0
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=500)
    resend_of: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    delivered_at: datetime | None = None


class WebhookAttempt(SQLModel, table=True):
    """Every attempt of a delivery: when, how long, what the receiver answered (or why not)."""

    __tablename__ = "webhook_attempt"

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: str = Field(index=True, max_length=64)
    attempt: int
    started_at: datetime = Field(default_factory=utcnow)
    duration_ms: int = 0
    status_code: int | None = None
    error: str | None = Field(default=None, max_length=500)
