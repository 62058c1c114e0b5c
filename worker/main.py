"""Build and run the worker. Clients (database, payment provider) are built once and
injected into the activity classes; tests build their own workers the same way."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import sys
from datetime import timedelta

import structlog
from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.worker import Worker

from activities.callback_tokens import new_callback_tokens
from activities.local_provider import LocalPaymentProvider
from activities.payments import PaymentActivities, PaymentProvider
from activities.slot_activities import SlotActivities
from activities.step_activities import StepActivities
from activities.steps import StepEnvironment, load_python_functions
from activities.steps.http import guarded_client
from activities.steps.ssrf import AllowList
from activities.stripe_provider import StripePaymentProvider, stripe_client
from activities.webhook_activities import WebhookActivities
from tollway.db import make_engine
from tollway.executions import ExecutionService
from tollway.ledger import OrderLedger
from tollway.logging import configure_logging
from tollway.migrate import require_current
from tollway.org_secrets import SecretStore
from tollway.settings import Settings, SettingsError, settings_for
from tollway.status_webhooks import WebhookStore
from tollway.temporal import connect
from worker.ops import free_loopback_port, metrics_runtime, ops_app, ops_server
from workflows.execution import ExecutionWorkflow
from workflows.late_payment import LatePaymentRefundWorkflow, RefundAnnouncementWorkflow
from workflows.policies import STICKY_SCHEDULE_TO_START
from workflows.slots import SlotsWorkflow
from workflows.webhook_delivery import WebhookDeliveryWorkflow

log = structlog.get_logger("tollway.worker")


def build_provider(settings: Settings, engine: Engine) -> PaymentProvider:
    if settings.payment_provider == "stripe":
        return StripePaymentProvider(
            stripe_client(settings), settings.public_base_url, settings.stripe_livemode
        )
    return LocalPaymentProvider(engine, settings.public_base_url)


def build_step_environment(settings: Settings, engine: Engine) -> StepEnvironment:
    keys = settings.secrets_key.get_secret_value() if settings.secrets_key else ""
    return StepEnvironment(
        http=guarded_client(AllowList.parse(settings.http_allow)),
        secrets=SecretStore(engine, keys) if keys else None,
        python=load_python_functions(settings.python_activities),
    )


def build_worker(
    client: Client,
    task_queue: str,
    provider: PaymentProvider,
    engine: Engine,
    executor: concurrent.futures.Executor,
    step_env: StepEnvironment | None = None,
    max_cached_workflows: int = 1000,
    drain_seconds: float = 0.0,
    secrets_key: str = "",
    webhook_retry_initial_seconds: float = 5.0,
) -> Worker:
    payments = PaymentActivities(provider, OrderLedger(engine))
    steps = StepActivities(step_env)
    slots = SlotActivities(client, task_queue)
    webhooks = WebhookActivities(
        client,
        task_queue,
        WebhookStore(engine, secrets_key) if secrets_key else None,
        # Deliveries go through the same SSRF guard as http steps.
        (step_env.http if step_env is not None else None) or guarded_client(AllowList.parse("")),
        webhook_retry_initial_seconds,
        ExecutionService(client, task_queue, 30.0, 10.0, ledger=OrderLedger(engine)),
    )
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[
            ExecutionWorkflow,
            LatePaymentRefundWorkflow,
            RefundAnnouncementWorkflow,
            SlotsWorkflow,
            WebhookDeliveryWorkflow,
        ],
        activities=[
            payments.open_checkout,
            payments.close_checkout,
            payments.record_failed_attempt,
            payments.confirm_payment,
            payments.refund_payment,
            new_callback_tokens,
            steps.run_step,
            slots.request,
            slots.ended,
            webhooks.emit,
            webhooks.announce_refund,
            webhooks.deliver,
            webhooks.give_up,
        ],
        activity_executor=executor,
        sticky_queue_schedule_to_start_timeout=STICKY_SCHEDULE_TO_START,
        max_cached_workflows=max_cached_workflows,
        # On SIGTERM, running activities get this long to finish before they are cancelled
        # (and retried on another worker).
        graceful_shutdown_timeout=timedelta(seconds=drain_seconds),
    )


async def run_worker(settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    require_current(engine)  # tables are made by `tollway migrate`, never here
    internal_port = free_loopback_port() if settings.worker_metrics_port else 0
    runtime = metrics_runtime(internal_port) if internal_port else None
    client = await connect(settings, runtime)
    ops = (
        ops_server(
            ops_app(engine, client, internal_port),
            settings.worker_metrics_host,
            settings.worker_metrics_port,
        )
        if internal_port
        else None
    )
    serving = asyncio.create_task(ops.serve()) if ops else None
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as executor:
        provider = build_provider(settings, engine)
        worker = build_worker(
            client,
            settings.task_queue,
            provider,
            engine,
            executor,
            build_step_environment(settings, engine),
            drain_seconds=settings.worker_drain_seconds,
            secrets_key=settings.secrets_key.get_secret_value() if settings.secrets_key else "",
            webhook_retry_initial_seconds=settings.webhook_retry_initial_seconds,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info(
            "worker started", task_queue=settings.task_queue, temporal=settings.temporal_address
        )
        async with worker:
            await stop.wait()
            log.info("worker stopping")
        if ops is not None and serving is not None:
            ops.should_exit = True
            await serving
    engine.dispose()


def main() -> None:
    try:
        settings = settings_for("worker")
    except SettingsError as exc:
        sys.stderr.write(f"tollway worker: {exc}\n")
        sys.stderr.flush()
        os._exit(2)
    configure_logging()
    asyncio.run(run_worker(settings))
