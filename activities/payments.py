"""The payments seam: one provider interface, one activity class that calls it.

The worker builds the provider once (``TOLLWAY_PAYMENT_PROVIDER``) and injects it; tests
inject their own. Provider calls are idempotent per execution, so an activity retry never
creates a second order or checkout session.
"""

from __future__ import annotations

from typing import Protocol

from temporalio import activity

from workflows.models import CheckoutRequest, CheckoutSession


class PaymentProvider(Protocol):
    name: str

    def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        """Create (or return the existing) order and checkout session for an execution."""
        ...


class PaymentActivities:
    def __init__(self, provider: PaymentProvider) -> None:
        self._provider = provider

    @activity.defn(name="payments.create_checkout")
    def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        return self._provider.create_checkout(request)
