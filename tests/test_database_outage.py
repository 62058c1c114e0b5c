"""The app's own PostgreSQL dies (SIGKILL of the postmaster and its backends) under concurrent
creates, views and webhooks, and comes back: callers see 503s with Retry-After and retry,
never a 500; every execution succeeds once; no webhook is acknowledged without delivery; every
payment is counted once.

The cluster is private to this test: initdb/pg_ctl from Debian's PostgreSQL packages, run as
the ``postgres`` user, on a free loopback port, in a temporary directory.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from temporalio.client import Client

from tests.conftest import make_settings
from tests.helpers import Tenant, api_client, create, key, make_tenant, view
from tests.money import assert_tenant_money_invariants, capture, completed, send
from tests.processes import worker_process
from tollway.db import make_engine
from tollway.migrate import migrate
from tollway.settings import Settings

BINARIES = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    bin: Path
    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.data / "log"),
            "-o", f"-p {self.port} -h 127.0.0.1 -k {self.data}", "-w", "start",
        )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend: the database vanishes mid-flight."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(
            ["pgrep", "-P", str(pid)], capture_output=True, text=True
        ).stdout.split()
        for victim in [pid, *map(int, children)]:
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bin / "pg_ctl"), "-D", str(self.data),
             "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )  # fmt: skip


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if not BINARIES or shutil.which("runuser") is None:
        pytest.skip("PostgreSQL server binaries (Debian's postgresql package) are not installed")
    root = Path(tempfile.mkdtemp(prefix="tollway-pg-", dir="/tmp"))
    shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    made = Cluster(Path(BINARIES[-1]).parent, data, _free_port())
    made._as_postgres(str(made.bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    made.start()
    try:
        yield made
    finally:
        made.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def outage_engine(cluster: Cluster) -> Iterator[Engine]:
    engine = make_engine(cluster.url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_settings(cluster: Cluster, temporal_address: str) -> Settings:
    return make_settings(cluster.url, temporal_address, request_deadline_seconds=10.0)


@pytest.fixture
async def pg_http(
    client: Client, pg_settings: Settings, outage_engine: Engine
) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(pg_settings, client, outage_engine, timeout=60) as http:
        yield http


async def test_database_killed_under_load_costs_503s_and_retries_never_500s_or_money(
    cluster: Cluster,
    client: Client,
    outage_engine: Engine,
    pg_settings: Settings,
    pg_http: httpx.AsyncClient,
) -> None:
    tenant: Tenant = make_tenant(outage_engine)
    seen: Counter[int] = Counter()
    delivered: dict[str, dict[str, Any]] = {}  # execution id -> the event acknowledged for it

    async def until_answered(call: Any) -> httpx.Response:
        """A client that retries 503s after Retry-After, as callers and Stripe do."""
        for _ in range(120):
            response: httpx.Response = await call()
            seen[response.status_code] += 1
            assert response.status_code != 500, response.text
            if response.status_code != 503:
                return response
            assert response.headers["retry-after"]
            assert response.json()["error"] in {"database_unavailable", "temporal_unavailable"}
            await asyncio.sleep(0.25)
        raise AssertionError("never answered")

    async def make(n: int) -> dict[str, Any]:
        wf = tenant.priced_wf if n % 2 else tenant.free_wf
        made = await until_answered(lambda: create(pg_http, tenant, wf, idempotencyKey=key()))
        assert made.status_code == 200, made.text
        data: dict[str, Any] = made.json()["data"]
        return data

    views: Counter[int] = Counter()

    async def watch(data: dict[str, Any]) -> None:
        eid, token = data["execution"]["id"], data["clientToken"]
        for _ in range(4):
            shown = await view(pg_http, eid, tenant.auth)
            views[shown.status_code] += 1  # the token was verified before: no 503 for it
            await until_answered(lambda: view(pg_http, eid, {"Authorization": f"Bearer {token}"}))
            await asyncio.sleep(0.5)

    async def pay(execution: dict[str, Any], event: dict[str, Any]) -> None:
        paid = await until_answered(lambda: send(pg_http, event))
        assert paid.status_code == 200 and paid.json()["data"]["outcome"] == "delivered"
        delivered[execution["id"]] = event

    with worker_process(pg_settings):
        # While the database answers: executions made, the payer's money taken (their bank is
        # not our database), tokens and workflows verified once.
        before = [await make(n) for n in range(8)]
        priced = [d["execution"] for d in before if d["execution"]["orderId"]]
        events = [(e, completed(e, capture(outage_engine, e))) for e in priced]
        with outage_engine.connect():
            pass

        async def outage() -> None:
            await asyncio.to_thread(cluster.kill)
            await asyncio.sleep(4.0)
            await asyncio.to_thread(cluster.start)

        async def during(n: int) -> dict[str, Any]:
            await asyncio.sleep(0.3 + 0.25 * n)
            return await make(n)

        # The database dies with webhooks, creates and views in flight, and comes back.
        results = await asyncio.gather(
            outage(),
            *(pay(e, event) for e, event in events),
            *(watch(d) for d in before),
            *(during(n) for n in range(8, 20)),
        )
        made_during = [r for r in results if isinstance(r, dict)]
        ids = [d["execution"]["id"] for d in before + made_during]
        for data in made_during:
            if data["execution"]["orderId"]:
                e = data["execution"]
                await pay(e, completed(e, capture(outage_engine, e)))
        for eid in ids:
            for _ in range(240):
                done = await until_answered(lambda eid=eid: view(pg_http, eid, tenant.auth))
                state = done.json()["data"]["execution"]
                if state["status"] == "workflow_succeeded":
                    break
                await asyncio.sleep(0.25)
            assert state["status"] == "workflow_succeeded", state
            if eid in delivered:  # acknowledged means taken in: it paid, once
                assert state["paymentStatus"] == "paid"
    assert seen[503] > 0, f"the outage was never seen: {seen}"
    assert views == Counter({200: 4 * len(before)}), views  # auth and views outlived it
    assert seen[500] == 0
    await assert_tenant_money_invariants(client, outage_engine, tenant.org_id)
    # Exactly one workflow per execution, whatever was retried.
    for eid in ids:
        counted = await client.count_workflows(f"WorkflowId = '{eid}'")
        assert counted.count == 1


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends() -> None:
    import structlog
    from sqlalchemy.exc import OperationalError
    from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

    from tollway.outage import OutageLog

    outage = OutageLog("database")
    with structlog.testing.capture_logs() as logs:
        for _ in range(5):  # five failed attempts of ledger activities
            with pytest.raises(ApplicationError) as failed, outage.watch():
                raise OperationalError("SELECT 1", {}, Exception("connection refused"))
            assert failed.value.category == ApplicationErrorCategory.BENIGN
            assert not failed.value.non_retryable
        for _ in range(3):  # then it answers again
            with outage.watch():
                pass
    assert [entry["event"] for entry in logs] == [
        "database unavailable",
        "database available again",
    ]
