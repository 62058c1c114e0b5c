"""The embedded payment provider: Tollway serves its own checkout page, keeps the money in
its own bank (``tollway.local_bank``) and speaks Stripe's webhook wire format."""

from __future__ import annotations

import secrets

from sqlalchemy import Engine

from activities.payments import ProviderSession
from tollway.local_bank import LocalBank
from tollway.local_bank import checkout_event as checkout_event
from tollway.local_bank import encode as encode
from tollway.local_bank import sign as sign
from workflows.models import CheckoutRequest, RefundRequest


class LocalPaymentProvider:
    name = "local"
    livemode = False

    def __init__(self, engine: Engine, public_base_url: str) -> None:
        self._bank = LocalBank(engine)
        self._base_url = public_base_url.rstrip("/")

    # -- provider interface -------------------------------------------------------------------

    def create_session(
        self, request: CheckoutRequest, order_id: str, idempotency_key: str
    ) -> ProviderSession:
        # Random, never derived from the execution id: whoever holds the id must not be able
        # to open, pay or cancel its checkout. Called once per order (the ledger keeps it).
        session_id = f"cs_local_{secrets.token_urlsafe(24)}"
        return ProviderSession(session_id, f"{self._base_url}/checkout/{session_id}")

    def expire_session(self, session_id: str, idempotency_key: str) -> None:
        """Nothing to do here: the page refuses payment once the order is not pending."""

    def refund(self, request: RefundRequest) -> str:
        return self._bank.refund(request)

    def capture(self, execution_id: str, session_id: str | None, amount: int, currency: str) -> str:
        """A payer's card charged in the local bank (what the checkout page does; tests too)."""
        return self._bank.capture(execution_id, session_id, amount, currency)
