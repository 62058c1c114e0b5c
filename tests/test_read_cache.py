"""The API's cache of what it reads from its database on every request (api/read_cache.py):
one load per key however many requests miss at once, refreshed ahead of expiry without making
a request wait, never used past its ttl, and what was last read while the database is down."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.exc import OperationalError
from structlog.testing import capture_logs
from temporalio.client import Client
from temporalio.worker import Worker

from api.read_cache import ReadCache
from tests.conftest import make_settings
from tests.helpers import api_client, create, make_tenant
from tests.test_metrics import samples
from tollway.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Source:
    """A value in "the database", read by a load that can be held until released."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.loads = 0
        self.gate = threading.Event()
        self.gate.set()
        self.down = False

    def load(self) -> str:
        self.loads += 1
        assert self.gate.wait(10)
        if self.down:
            raise OperationalError("SELECT", {}, Exception("connection refused"))
        return self.value


def cache(clock: Clock, **kw: object) -> ReadCache[str]:
    return ReadCache(10.0, clock=clock, **kw)  # type: ignore[arg-type]


async def settle(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


async def test_requests_that_miss_together_share_one_load() -> None:
    clock, source = Clock(), Source("v1")
    reads = cache(clock)
    source.gate.clear()
    waiting = [asyncio.ensure_future(reads.get("k", source.load)) for _ in range(32)]
    await settle(lambda: source.loads == 1)
    await asyncio.sleep(0.05)
    assert not any(w.done() for w in waiting)
    source.gate.set()
    assert await asyncio.gather(*waiting) == ["v1"] * 32
    assert source.loads == 1
    # Other keys are loads of their own.
    assert await reads.get("other", source.load) == "v1"
    assert source.loads == 2


async def test_a_value_is_served_from_memory_within_the_first_half_of_its_ttl() -> None:
    clock, source = Clock(), Source("v1")
    reads = cache(clock)
    assert await reads.get("k", source.load) == "v1"
    source.value = "v2"
    clock.now += 4.9
    for _ in range(10):
        assert await reads.get("k", source.load) == "v1"
    await asyncio.sleep(0.05)
    assert source.loads == 1


async def test_the_second_half_of_the_ttl_refreshes_ahead_without_making_anyone_wait() -> None:
    clock, source = Clock(), Source("v1")
    reads = cache(clock)
    assert await reads.get("k", source.load) == "v1"
    source.value, source.gate = "v2", threading.Event()  # the refresh's query hangs
    clock.now += 5.0
    # Answered at once from memory while the refresh runs; one refresh for them all.
    answers = await asyncio.wait_for(
        asyncio.gather(*(reads.get("k", source.load) for _ in range(20))), 1
    )
    assert answers == ["v1"] * 20
    await settle(lambda: source.loads == 2)
    source.gate.set()
    await settle(lambda: source.loads == 2 and not reads._loads)
    assert await reads.get("k", source.load) == "v2"
    # The refreshed value's ttl runs from its own load.
    clock.now += 4.9
    assert await reads.get("k", source.load) == "v2"
    assert source.loads == 2


async def test_a_value_is_never_used_past_its_ttl() -> None:
    """A revoked token (or edited workflow) applies within ttl: the request after expiry waits
    for a fresh read, even while a slow refresh ahead is still running."""
    clock, source = Clock(), Source("granted")
    reads = cache(clock)
    assert await reads.get("k", source.load) == "granted"
    source.value = "revoked"
    clock.now += 10.0
    assert await reads.get("k", source.load) == "revoked"

    # A refresh ahead that is still running when the entry expires: later requests wait for
    # it rather than use the old value.
    source.value, source.gate = "again", threading.Event()
    clock.now += 5.0
    assert await reads.get("k", source.load) == "revoked"  # starts the refresh
    clock.now += 5.0
    late = asyncio.ensure_future(reads.get("k", source.load))
    await asyncio.sleep(0.05)
    assert not late.done()
    source.gate.set()
    assert await late == "again"
    assert source.loads == 3


async def test_a_zero_ttl_reads_every_time() -> None:
    clock, source = Clock(), Source("v1")
    reads: ReadCache[str] = ReadCache(0.0, clock=clock)
    for value in ("v1", "v2", "v3"):
        source.value = value
        assert await reads.get("k", source.load) == value
    assert source.loads == 3


async def test_a_waiter_that_goes_away_does_not_cancel_the_load_others_wait_on() -> None:
    clock, source = Clock(), Source("v1")
    reads = cache(clock)
    source.gate.clear()
    first = asyncio.ensure_future(reads.get("k", source.load))
    second = asyncio.ensure_future(reads.get("k", source.load))
    await settle(lambda: source.loads == 1)
    first.cancel()
    await asyncio.sleep(0.01)
    source.gate.set()
    assert await second == "v1"
    assert first.cancelled()
    assert source.loads == 1


async def test_while_the_database_is_down_the_last_value_within_stale_is_used() -> None:
    clock, source = Clock(), Source("v1")
    reads = cache(clock, stale=300.0)
    assert await reads.get("k", source.load) == "v1"
    source.down = True
    clock.now += 200.0
    assert await reads.get("k", source.load) == "v1"
    clock.now += 101.0  # last read 301 s ago
    with pytest.raises(OperationalError):
        await reads.get("k", source.load)
    # Never read: nothing to fall back on.
    with pytest.raises(OperationalError):
        await reads.get("never", source.load)
    source.down = False
    assert await reads.get("k", source.load) == "v1"


async def test_keep_decides_which_values_may_stand_in_during_an_outage() -> None:
    """An unknown token read before the outage is a 503 while it lasts, not a 401 from
    memory: only verified principals stand in (``keep``)."""
    clock, source = Clock(), Source("")
    reads = cache(clock, stale=300.0, keep=bool)
    assert await reads.get("k", source.load) == ""
    source.value = "v1"
    clock.now += 10.0
    assert await reads.get("k", source.load) == "v1"
    source.value = ""
    clock.now += 10.0
    assert await reads.get("k", source.load) == ""  # read as unknown: forgets "v1"
    source.down = True
    clock.now += 10.0
    with pytest.raises(OperationalError):
        await reads.get("k", source.load)


async def test_a_refresh_ahead_that_fails_keeps_the_value_until_its_ttl_and_logs_faults() -> None:
    clock, source = Clock(), Source("v1")
    reads = cache(clock, stale=300.0)
    assert await reads.get("k", source.load) == "v1"
    source.down = True
    clock.now += 6.0
    with capture_logs() as outage_lines:
        assert await reads.get("k", source.load) == "v1"  # the refresh fails behind it
        await settle(lambda: source.loads == 2 and not reads._loads)
    assert await reads.get("k", source.load) == "v1"  # still within ttl: no new load
    assert source.loads == 2
    assert outage_lines == []  # an outage is logged where it is answered, not here

    def broken() -> str:
        raise ValueError("not an outage")

    clock.now += 10.0
    source.down = False
    assert await reads.get("k", source.load) == "v1"
    clock.now += 6.0
    with capture_logs() as lines:
        assert await reads.get("k", broken) == "v1"
        await settle(lambda: not reads._loads)
    assert [(line["event"], line["log_level"]) for line in lines] == [
        ("cache refresh failed", "error")
    ]
    assert "not an outage" in lines[0]["error"]
    assert await reads.get("k", source.load) == "v1"


async def test_the_ttl_runs_from_when_the_load_began() -> None:
    """A slow read may have seen the row before it was revoked: its value lives ``ttl`` from
    the read's start, not its end."""
    clock, source = Clock(), Source("granted")
    reads = cache(clock)
    source.gate.clear()
    first = asyncio.ensure_future(reads.get("k", source.load))
    await settle(lambda: source.loads == 1)
    clock.now += 8.0
    source.gate.set()
    assert await first == "granted"
    source.value = "revoked"
    clock.now += 2.0  # 10 s after the read began, 2 s after it ended
    assert await reads.get("k", source.load) == "revoked"


async def test_concurrent_creates_with_cold_caches_read_each_row_once(
    client: Client,
    engine: Engine,
    database_url: str,
    temporal_address: str,
    settings: Settings,
    worker: Worker,
) -> None:
    """Through the app: 32 creates at once by one token, for one workflow, with nothing cached
    yet, read the token, the workflow and the organization's webhook endpoints once each
    (each create had made its own three queries when the caches ran out together), and
    /metrics counts those reads (``tollway_cache_loads_total``, which the bench prints)."""
    tenant = make_tenant(engine)
    cached = make_settings(
        database_url, temporal_address, task_queue=settings.task_queue, auth_cache_seconds=30.0
    )
    statements: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *rest: object) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        async with api_client(cached, client, engine, timeout=30, metrics=True) as http:
            answers = await asyncio.gather(
                *(create(http, tenant, tenant.free_wf) for _ in range(32))
            )
            exposed = samples((await http.get("/metrics")).text)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert [a.status_code for a in answers] == [200] * 32, [a.text for a in answers]
    for table in ("api_token", "workflow_version", "webhook_endpoint"):
        reads = [s for s in statements if f"FROM {table}" in s]
        assert len(reads) == 1, (table, statements)
    loads = {
        dict(labels)["cache"]: value
        for (name, labels), value in exposed.items()
        if name == "tollway_cache_loads_total"
    }
    assert loads == {"tokens": 1.0, "workflows": 1.0, "endpoints": 1.0}
