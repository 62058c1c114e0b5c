"""The payment phase: open a checkout, wait for a confirmed payment of the exact amount,
refund anything else."""

from __future__ import annotations

import builtins
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.payments import PaymentActivities
    from workflows.execution_base import ExecutionBase
    from workflows.models import (
        CheckoutRequest,
        CheckoutSession,
        CloseCheckoutRequest,
        ConfirmPaymentRequest,
        PaymentEventKind,
        PaymentNotice,
        PaymentStatus,
        RefundRequest,
        Status,
        from_the_orders_checkout,
    )
    from workflows.policies import (
        CALL_TIMEOUT,
        CHECKOUT_DEADLINE,
        CHECKOUT_RETRY,
        LEDGER_TIMEOUT,
        MONEY_RETRY,
        failure_message,
    )


LATE_REFUND_VISIBLE_PATCH = "late-refund-visible"


class PaymentPhase(ExecutionBase):
    _checkout: CheckoutSession | None = None

    async def _collect_payment(self) -> bool:
        price = self._input.definition.price
        assert price is not None
        deadline = workflow.now() + timedelta(seconds=self._input.definition.paymentTimeoutSeconds)
        try:
            checkout = await workflow.execute_activity_method(
                PaymentActivities.open_checkout,
                CheckoutRequest(
                    execution_id=self._input.execution_id,
                    organization_id=self._input.organization_id,
                    public_workflow_id=self._input.public_workflow_id,
                    workflow_version=self._input.workflow_version,
                    workflow_name=self._input.definition.name,
                    price=price,
                    expires_at=deadline,
                    requested_at=workflow.now(),
                ),
                summary="open the checkout",
                start_to_close_timeout=CALL_TIMEOUT,
                schedule_to_close_timeout=CHECKOUT_DEADLINE,
                retry_policy=CHECKOUT_RETRY,
            )
        except ActivityError as err:
            self._end(
                Status.FAILED,
                f"checkout could not be created: {failure_message(err)}",
                "the checkout could not be created",
                paymentStatus=PaymentStatus.CANCELLED,
            )
            return False
        self._checkout = checkout
        self._set(
            orderId=checkout.order_id,
            checkoutSessionId=checkout.checkout_session_id,
            checkoutUrl=checkout.checkout_url,
        )
        self._checkout_settled = True

        while self._payment is None and not self._state.status.terminal:
            remaining = deadline - workflow.now()
            if remaining <= timedelta(0):
                await self._close_checkout("expired")
                self._end(
                    Status.CANCELLED,
                    "payment_expired",
                    "payment_expired",
                    paymentStatus=PaymentStatus.EXPIRED,
                )
                return False
            try:
                await workflow.wait_condition(
                    lambda: bool(self._inbox) or self._cancel is not None, timeout=remaining
                )
            except builtins.TimeoutError:
                continue
            if self._cancel is not None:
                await self._close_checkout("cancelled")
                self._end_cancelled("before payment", paymentStatus=PaymentStatus.CANCELLED)
                return False
            await self._drain_inbox()
        if self._payment is None:
            return False

        payment = self._payment
        assert payment.payment_reference and payment.amount is not None and payment.currency
        await workflow.execute_activity_method(
            PaymentActivities.confirm_payment,
            ConfirmPaymentRequest(
                execution_id=self._input.execution_id,
                provider=payment.provider,
                payment_reference=payment.payment_reference,
                amount=payment.amount,
                currency=payment.currency,
            ),
            summary="record the payment",
            start_to_close_timeout=LEDGER_TIMEOUT,
            retry_policy=MONEY_RETRY,
        )
        self._set(
            status=Status.PAYMENT_CONFIRMED,
            paymentStatus=PaymentStatus.PAID,
            statusReason=None,
            clientStatusReason=None,
        )
        return True

    async def _drain_inbox(self) -> None:
        while self._inbox:
            notice = self._inbox[0]
            self._outcomes[notice.event_id] = await self._handle(notice)
            self._inbox.pop(0)
            self._handled.add(notice.event_id)

    def _accepts(self, notice: PaymentNotice) -> bool:
        """Only the provider this execution's order was opened with, for the checkout
        session it opened (and, for Stripe, in the key's mode) can change the execution."""
        checkout = self._checkout
        if checkout is None:
            return False
        if checkout.provider is None:  # recorded before these checks existed (replay)
            return True
        return from_the_orders_checkout(
            notice,
            provider=checkout.provider,
            session_id=checkout.checkout_session_id,
            livemode=checkout.livemode,
            kept_reference=self._payment.payment_reference if self._payment else None,
        )

    async def _handle(self, notice: PaymentNotice) -> str:
        if not self._accepts(notice):
            workflow.logger.warning(
                "payment event ignored: not from this execution's checkout",
                extra={"event_id": notice.event_id, "provider": notice.provider},
            )
            return "ignored"
        awaiting = self._state.status == Status.AWAITING_PAYMENT
        if notice.kind == PaymentEventKind.PAID:
            return await self._on_paid(notice)
        if notice.kind == PaymentEventKind.PROCESSING and awaiting:
            self._reason("payment processing", "payment processing")
        elif notice.kind == PaymentEventKind.FAILED and awaiting:
            await workflow.execute_activity_method(
                PaymentActivities.record_failed_attempt,
                self._input.execution_id,
                summary="record a failed payment attempt",
                start_to_close_timeout=LEDGER_TIMEOUT,
                retry_policy=MONEY_RETRY,
            )
            reason = "payment failed; the checkout is still open"
            self._reason(reason, reason, paymentStatus=PaymentStatus.FAILED)
        elif notice.kind == PaymentEventKind.EXPIRED and awaiting:
            await self._close_checkout("expired")
            self._end(
                Status.CANCELLED,
                "payment_expired",
                "payment_expired",
                paymentStatus=PaymentStatus.EXPIRED,
            )
        elif notice.kind == PaymentEventKind.REFUNDED and self._is_own(notice):
            self._set(paymentStatus=PaymentStatus.REFUNDED)
        return "applied"

    def _is_own(self, notice: PaymentNotice) -> bool:
        return (
            self._payment is not None
            and notice.payment_reference == self._payment.payment_reference
        )

    async def _on_paid(self, notice: PaymentNotice) -> str:
        if not notice.payment_reference or self._is_own(notice):
            return "applied"  # another event about the payment we already hold
        price = self._input.definition.price
        if self._payment is None and self._state.status == Status.AWAITING_PAYMENT:
            assert price is not None
            currency = (notice.currency or "").lower()
            if (notice.amount, currency) == (price.amount, price.currency):
                self._payment = notice
                return "applied"
            await self._refund(notice, "amount or currency does not match the order")
            await self._close_checkout("cancelled")
            reason = (
                f"payment of {notice.amount} {currency} does not match the order "
                f"({price.amount} {price.currency}); nothing was run and it was refunded"
            )
            self._end(Status.FAILED, reason, reason, paymentStatus=PaymentStatus.REFUNDED)
            return "refunded"
        late = self._payment is None
        reason = (
            "duplicate payment"
            if not late
            else f"payment after the execution ended ({self._state.status.value})"
        )
        await self._refund(notice, reason)
        if late and workflow.patched(LATE_REFUND_VISIBLE_PATCH):
            # The execution never kept a payment, so what it holds now is a refund.
            note = "a payment that arrived after it ended was refunded"
            self._reason(
                f"{self._state.statusReason}; {note}" if self._state.statusReason else note,
                f"{self._state.clientStatusReason}; {note}"
                if self._state.clientStatusReason
                else note,
                paymentStatus=PaymentStatus.REFUNDED,
            )
        return "refunded"

    async def _refund(self, notice: PaymentNotice, reason: str) -> None:
        await workflow.execute_activity_method(
            PaymentActivities.refund_payment,
            RefundRequest.of_notice(self._input.execution_id, notice, reason),
            summary="refund a payment",
            start_to_close_timeout=CALL_TIMEOUT,
            retry_policy=MONEY_RETRY,
        )

    async def _refund_own(self, reason: str) -> None:
        if self._payment is not None and self._state.paymentStatus == PaymentStatus.PAID:
            await self._refund(self._payment, reason)
            self._set(paymentStatus=PaymentStatus.REFUNDED)

    async def _close_checkout(self, outcome: str) -> None:
        session_id = self._state.checkoutSessionId
        if session_id is None:
            return
        await workflow.execute_activity_method(
            PaymentActivities.close_checkout,
            CloseCheckoutRequest(
                execution_id=self._input.execution_id,
                checkout_session_id=session_id,
                outcome=outcome,
            ),
            summary="close the checkout",
            start_to_close_timeout=CALL_TIMEOUT,
            retry_policy=MONEY_RETRY,
        )
