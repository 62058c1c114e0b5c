"""`make bench`: the HTTP layer against the raw temporalio client, side by side in one run.

One Temporal dev server, one worker process and one API process (uvicorn, real HTTP on
loopback), every process on every CPU; ``BENCH_LAYOUT=split`` gives the dev server half of
the CPUs and its clients the other half. Creates (free): HTTP POST versus the raw client starting
the same workflow with the same input (planned by the API's own ``plan_start``), at
concurrency 32, in alternating rounds. Views: HTTP GET versus a raw
query on the same open executions, sequentially. Then calls per operation, payments, event
streams and Temporal's own HTTP API. Prints throughput, p50/p99 and the ratios.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from google.protobuf.json_format import MessageToJson
from sqlalchemy import Engine
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import (
    WorkflowIDConflictPolicy,
)
from temporalio.contrib.pydantic import pydantic_data_converter

from api.bodies import CreateExecutionBody
from api.http_protocol import PROTOCOL
from bench import floor_front as floor
from bench.caller import IDLE_SECONDS, Caller
from tollway import admin
from tollway.admin import WorkflowRecord
from tollway.codec import with_codec
from tollway.db import make_engine
from tollway.definitions import parse_definition
from tollway.devstack import dev_secrets
from tollway.direct_calls import DirectCalls
from tollway.executions import StartPlan
from tollway.migrate import migrate
from tollway.settings import Settings
from tollway.temporal import COMPRESSION
from tollway.temporal_server import start_dev_command
from workflows.execution import EXECUTION_WORKFLOW, ExecutionWorkflow
from workflows.models import AttachInput

CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))
# Rounds alternate between the sides; this VM's speed drifts by 10-15 % from one round to
# the next, so four short rounds per side average it out better than two long ones.
CREATES = int(os.environ.get("BENCH_CREATES", "200"))  # per side, per round
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "4"))
VIEWS = int(os.environ.get("BENCH_VIEWS", "200"))
# What the stack's API and worker read from TOLLWAY_TEMPORAL_GRPC_COMPRESSION; the raw client
# uses the same.
GRPC_COMPRESSION = Settings().temporal_grpc_compression
PUBLIC_BASE_URL = Settings().public_base_url  # what the stack's API puts in every input
LAYOUT = os.environ.get("BENCH_LAYOUT", "shared")
"""``shared`` (the default): every process on every CPU, competing with the server for it;
``split``: the dev server on the first half of the CPUs this process may use, its clients
(worker, API, the bench itself) on the rest, as a deployment runs Temporal on machines of
its own (on two cores it puts the API, worker and bench on one core, which costs the views
and the webhook more than it gives the creates: docs/bench.md, sixth pass)."""
CPUS = sorted(os.sched_getaffinity(0))  # read before the bench pins itself
DEFINITION = {
    "name": "Bench",
    "access": "public_execute",
    "steps": [{"id": "s", "kind": "transform", "expression": "{n: request.n}"}],
    "output": "steps.s",
}


def _layout() -> tuple[set[int], set[int]] | None:
    """The server's CPUs and its clients' under ``LAYOUT`` (None: shared)."""
    if LAYOUT not in ("split", "shared"):
        raise SystemExit(f"BENCH_LAYOUT must be split or shared, not {LAYOUT!r}")
    if LAYOUT == "shared" or len(CPUS) < 2:
        return None
    half = len(CPUS) // 2
    return set(CPUS[:half]), set(CPUS[half:])


def _pin_self(cpus: set[int]) -> None:
    """Every thread of this process (the SDK's runtime threads too) onto ``cpus``; the
    processes it starts afterwards inherit them."""
    for task in Path("/proc/self/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus)


def describe_layout() -> str:
    layout = _layout()
    if layout is None:
        return f"layout shared: every process on CPUs {CPUS}"
    server, clients = layout
    return (
        f"layout split: Temporal's dev server on CPUs {sorted(server)}; "
        f"worker, API and bench on CPUs {sorted(clients)}"
    )


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _drive(
    n: int, concurrency: int, call: Callable[[int], Awaitable[None]]
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    counter = iter(range(n))

    async def lane() -> None:
        for i in counter:
            started = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return n / (time.perf_counter() - began), latencies


Rounds = dict[str, list[tuple[float, list[float]]]]

CALLER_CPU: dict[tuple[str, str], list[float]] = {}
"""The bench process's own CPU per call, by comparison and side (``_rounds``): what each
side's caller costs on the cores it shares with the server."""


MACHINE_BUSY: dict[tuple[str, str], list[float]] = {}
"""How busy the machine's CPUs were while each side's rounds ran (``_rounds``): near 100 %
the sides compete for CPU, well below it for something else (the server's persistence)."""


def caller_cpu(comparison: str) -> str:
    return ", ".join(
        f"{side} {1000 * statistics.mean(per_call):.2f} ms"
        for (name, side), per_call in CALLER_CPU.items()
        if name == comparison
    )


WATCHED: dict[str, int] = {}
"""The stack's processes by name (``stack``), whose CPU ``_rounds`` reads per side."""

PROCESS_CPU: dict[tuple[str, str], dict[str, list[float]]] = {}
"""Each watched process's CPU per call, by comparison and side: ``<name>`` while the side's
round ran, ``<name>+settle`` until what it started had finished or been cleared too."""


def _processes_cpu() -> dict[str, float]:
    return {name: _cpu_seconds(pid) for name, pid in WATCHED.items()}


def process_cpu(comparison: str) -> list[str]:
    lines = []
    for (name, side), by_process in PROCESS_CPU.items():
        if name == comparison:
            shown = ", ".join(
                f"{process} {1000 * statistics.mean(v):.2f}" for process, v in by_process.items()
            )
            lines.append(f"    {side:18s} {shown}")
    return lines


def machine_busy(comparison: str) -> str:
    return ", ".join(
        f"{side} {100 * statistics.mean(fractions):.0f} %"
        for (name, side), fractions in MACHINE_BUSY.items()
        if name == comparison
    )


async def _rounds(comparison: str, sides: dict[str, Callable[[int], Awaitable[None]]],
                  settle: Callable[[], Awaitable[None]]) -> Rounds:  # fmt: skip
    """After a warm-up, ``ROUNDS`` rounds of ``CREATES`` per side at ``CONCURRENCY``, the
    order alternating (A B C, C B A, ...), each round followed by ``settle`` (what it
    started finished or cleared) and a quiet machine: no side measures while the server
    still works off another's."""
    for side in sides.values():  # warm every path first
        await _drive(64, 8, side)
    await settle()
    results: Rounds = {name: [] for name in sides}
    names = list(sides)
    for n in range(ROUNDS):
        for name in names if n % 2 == 0 else reversed(names):
            before, (busy0, total0), cpu0 = _own_cpu(), _busy_ticks(), _processes_cpu()
            results[name].append(await _drive(CREATES, CONCURRENCY, sides[name]))
            CALLER_CPU.setdefault((comparison, name), []).append((_own_cpu() - before) / CREATES)
            busy1, total1 = _busy_ticks()
            MACHINE_BUSY.setdefault((comparison, name), []).append(
                (busy1 - busy0) / max(total1 - total0, 1)
            )
            cpu1 = _processes_cpu()
            await settle()
            cpu2 = _processes_cpu()
            by_process = PROCESS_CPU.setdefault((comparison, name), {})
            for process in WATCHED:
                by_process.setdefault(process, []).append((cpu1[process] - cpu0[process]) / CREATES)
                by_process.setdefault(f"{process}+settle", []).append(
                    (cpu2[process] - cpu0[process]) / CREATES
                )
            await _quiet()
    return results


def _busy_ticks() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


async def _quiet(limit: float = 15.0) -> None:
    """Until the machine's CPUs were at least 85 % idle for a quarter of a second."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        busy0, total0 = _busy_ticks()
        await asyncio.sleep(0.25)
        busy1, total1 = _busy_ticks()
        if total1 > total0 and (busy1 - busy0) / (total1 - total0) < 0.15:
            return


async def _wait_http(url: str) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def _uvicorn(factory: str, port: int) -> list[str]:
    """The API as the bench runs it (and the floor front beside it): uvicorn with uvloop and
    the API's protocol, no access log."""
    return [
        sys.executable, "-m", "uvicorn", factory, "--factory", "--host", "127.0.0.1",
        "--port", str(port), "--no-access-log", "--log-level", "warning", "--http", PROTOCOL,
    ]  # fmt: skip


@dataclass
class Stack:
    """One dev server, one worker and one API, with a bench organization and its workflows."""

    client: Client
    http: httpx.AsyncClient
    caller: Caller
    """The measured HTTP side's client (bench/caller.py): ~0.05 ms of CPU per GET and ~0.2 ms
    per create with its JSON, where aiohttp spends ~0.12 and ~0.6 ms and httpx ~1.5 ms, on
    cores the server shares; the bench measures Tollway, not the caller's choice of client.
    ``aio`` is there to show what that choice costs (the report prints the floors and each
    side's caller CPU)."""
    aio: aiohttp.ClientSession
    org_id: str
    workflow_id: str
    priced_id: str
    record: WorkflowRecord
    task_queue: str
    api: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]
    engine: Engine
    webhook_secret: str
    temporal_http_port: int  # Temporal's own HTTP API on the same dev server
    token_id: str  # the bench token's id: the raw side starts as that token's creates do
    env: dict[str, str]  # the API's environment: the floor front (bench/floor_front.py) runs in it


@asynccontextmanager
async def stack(production: bool = False) -> AsyncIterator[Stack]:
    """``production``: the API and worker as `tollway api` / `tollway worker` run them in a
    deployment (JSON logs and the access log written, Redis-backed rate limits, the worker's
    metrics port on); the local payment provider stands in for Stripe."""
    workdir = Path(tempfile.mkdtemp(prefix="tollway-bench-"))
    temporal_port, api_port, temporal_http_port = _port(), _port(), _port()
    db_url = os.environ.get("BENCH_DATABASE_URL", f"sqlite:///{workdir / 'bench.db'}")
    task_queue = f"bench-{uuid.uuid4().hex[:8]}"
    generated = dev_secrets(workdir / "secrets.json")
    env = {
        **os.environ,
        **generated,
        "TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
        "DATABASE_URL": db_url,
        "TOLLWAY_TASK_QUEUE": task_queue,
        "TOLLWAY_AUTH_CACHE_SECONDS": "5",
        "TOLLWAY_WORKER_METRICS_PORT": str(_port()) if production else "0",
    }
    if production:
        env["TOLLWAY_RATE_LIMIT_STORAGE"] = "redis://127.0.0.1:6379/12"
    engine = make_engine(db_url)
    migrate(engine)
    org = admin.create_organization(engine, "Bench")
    token_row, token = admin.create_token(engine, org.id, "1000000/second")
    wf = admin.create_workflow(engine, org.id, parse_definition(DEFINITION))
    priced = admin.create_workflow(
        engine,
        org.id,
        parse_definition({**DEFINITION, "price": {"amount": 100, "currency": "usd"}}),
    )
    record = admin.find_workflow(engine, wf.id)
    assert record is not None

    log = (workdir / "temporal.log").open("wb")
    layout = _layout()
    server_cpus = layout[0] if layout else None
    procs = [
        subprocess.Popen(
            [
                *start_dev_command(workdir / "temporal.db", temporal_port, None),
                "--http-port",
                str(temporal_http_port),
            ],
            stdout=log,
            stderr=log,
            preexec_fn=(lambda: os.sched_setaffinity(0, server_cpus)) if server_cpus else None,
        )
    ]
    if layout:
        _pin_self(layout[1])
    try:
        client = None
        for _ in range(100):
            try:
                # The raw side encrypts its payloads too, and compresses its messages as the
                # API and the worker do: the same Temporal work.
                client = await Client.connect(
                    f"127.0.0.1:{temporal_port}",
                    data_converter=with_codec(
                        pydantic_data_converter, generated["TOLLWAY_PAYLOAD_KEYS"]
                    ),
                    grpc_compression=COMPRESSION[GRPC_COMPRESSION],
                )
                break
            except RuntimeError:
                await asyncio.sleep(0.1)
        assert client is not None
        tollway = [sys.executable, "-c", "from tollway.cli import main; main()"]
        logs = (workdir / "tollway.log").open("ab") if production else subprocess.DEVNULL
        worker = subprocess.Popen(
            [*tollway, "worker"] if production else [sys.executable, "-m", "worker"],
            env=env,
            stdout=logs,
            stderr=logs,
        )
        procs.append(worker)
        api_command = (
            [*tollway, "api", "--port", str(api_port)]
            if production
            else _uvicorn("api.app:serve_app", api_port)
        )
        api = subprocess.Popen(api_command, env=env, stdout=logs, stderr=logs)
        procs.append(api)
        WATCHED.update(temporal=procs[0].pid, worker=worker.pid, api=api.pid)
        base = f"http://127.0.0.1:{api_port}"
        await _wait_http(f"{base}/healthz")
        auth = {"Authorization": f"Bearer {token}"}
        # Idle connections dropped before uvicorn's 5 s keep-alive timeout closes them: reusing
        # one as the server closes it fails the request (aiohttp: "Server disconnected").
        limits = httpx.Limits(
            max_connections=CONCURRENCY,
            max_keepalive_connections=CONCURRENCY,
            keepalive_expiry=IDLE_SECONDS,
        )
        connector = aiohttp.TCPConnector(limit=CONCURRENCY, keepalive_timeout=IDLE_SECONDS)
        async with (
            httpx.AsyncClient(base_url=base, headers=auth, limits=limits, timeout=60) as http,
            aiohttp.ClientSession(base, headers=auth, connector=connector) as aio,
        ):
            caller = Caller("127.0.0.1", api_port, auth, CONCURRENCY)
            try:
                yield Stack(
                    client, http, caller, aio, org.id, wf.id, priced.id, record, task_queue,
                    api, worker, engine, generated["TOLLWAY_LOCAL_WEBHOOK_SECRET"].split(",")[0],
                    temporal_http_port, token_row.id, env,
                )  # fmt: skip
            finally:
                caller.close()
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=20)


def creator(
    s: Stack,
    workflow_id: str | None = None,
    made: list[str] | None = None,
    aio: bool = False,
    caller: Caller | None = None,
) -> Callable[[int], Awaitable[None]]:
    """POSTs of new executions through the bench's caller (or ``caller``: the floor front's),
    or through aiohttp with ``aio``."""
    run_id = uuid.uuid4().hex[:6]
    path = f"/v1/public/workflows/{workflow_id or s.workflow_id}/executions"

    def body(i: int) -> dict[str, Any]:
        return {
            "sourceSystem": "bench",
            "sourceEntityType": "n",
            "idempotencyKey": f"h-{run_id}-{i}-{time.perf_counter_ns()}",
            "requestPayload": {"n": i},
        }

    async def http_create(i: int) -> None:
        if aio:
            async with s.aio.post(path, json=body(i)) as r:
                status, answer = r.status, await r.json()
        else:
            status, answer = await (caller or s.caller).post_json(path, body(i))
        assert status == 200, answer
        if made is not None:
            made.append(answer["data"]["execution"]["id"])

    return http_create


def _plan(s: Stack, key: str, n: int, record: WorkflowRecord | None = None) -> StartPlan:
    """The start the API makes for the bench's create with this key and ``n``: the same
    input (its ``created_at``, ``public_base_url`` and fingerprint), search attributes,
    summary and details, planned by the same function."""
    body = CreateExecutionBody(
        sourceSystem="bench", sourceEntityType="n", idempotencyKey=key, requestPayload={"n": n}
    )
    return floor.plan_create(
        body, s.org_id, s.token_id, record or s.record, s.task_queue, PUBLIC_BASE_URL
    )


async def compare_creates(s: Stack) -> Rounds:
    """A free execution's create is one start (answered without waiting for the workflow's
    first task): against the raw client starting the same workflow with the same input,
    search attributes and summary. Between rounds every started workflow is let finish, so
    neither side queues behind the other's backlog."""
    run_id = uuid.uuid4().hex[:6]
    made: list[str] = []

    async def raw_create(i: int) -> None:
        key = f"r-{run_id}-{i}-{time.perf_counter_ns()}"
        plan = _plan(s, key, i)
        await s.client.start_workflow(ExecutionWorkflow.run, plan.input, **plan.options())
        made.append(plan.input.execution_id)

    async def drain() -> None:
        await asyncio.gather(*(s.client.get_workflow_handle(i).result() for i in made))
        made.clear()

    sides = {
        "raw": raw_create,
        "http": creator(s, made=made),
        "http_aiohttp": creator(s, made=made, aio=True),  # what the caller's client costs
    }
    return await _rounds("create", sides, drain)


async def compare_priced_creates(s: Stack) -> Rounds:
    """A priced execution's create is update-with-start: the answer waits for the workflow's
    first task (which opens the checkout). Against the raw client's update-with-start of the
    same workflow with the same input and update. Between rounds both sides' executions
    (parked, awaiting payment) are terminated, so neither side runs with the other's load."""
    record = admin.find_workflow(s.engine, s.priced_id)
    assert record is not None
    run_id = uuid.uuid4().hex[:6]
    made: list[str] = []
    http_create = creator(s, s.priced_id, made)

    async def raw_create(i: int) -> None:
        key = f"p-{run_id}-{i}-{time.perf_counter_ns()}"
        plan = _plan(s, key, i, record)
        inp, options = plan.input, plan.options()
        start = WithStartWorkflowOperation(
            ExecutionWorkflow.run,
            inp,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            **options,
        )
        await s.client.execute_update_with_start_workflow(
            ExecutionWorkflow.attach,
            AttachInput(fingerprint=inp.fingerprint, nonce=uuid.uuid4().hex),
            start_workflow_operation=start,
            id=f"create-{inp.fingerprint[:40]}",
        )
        made.append(inp.execution_id)

    async def clear() -> None:
        await asyncio.gather(*(s.client.get_workflow_handle(i).terminate() for i in made))
        made.clear()

    return await _rounds("priced", {"raw": raw_create, "http": http_create}, clear)


async def compare_views(s: Stack) -> Rounds:
    open_ids = []
    for i in range(20):
        r = await s.http.post(
            f"/v1/public/workflows/{s.priced_id}/executions",
            json={"sourceSystem": "bench", "sourceEntityType": "v", "requestPayload": {"n": i}},
        )
        open_ids.append(r.json()["data"]["execution"]["id"])

    async def http_view(i: int) -> None:
        await _get(s, f"/v1/public/executions/{open_ids[i % len(open_ids)]}")

    async def raw_view(i: int) -> None:
        handle = s.client.get_workflow_handle_for(
            ExecutionWorkflow.run, open_ids[i % len(open_ids)]
        )
        await handle.query(ExecutionWorkflow.view)

    async def http_floor(i: int) -> None:
        await _get(s, "/healthz")

    async def aiohttp_floor(i: int) -> None:
        async with s.aio.get("/healthz") as r:
            await r.read()
            assert r.status == 200, r.status

    async def httpx_floor(i: int) -> None:
        assert (await s.http.get("/healthz")).status_code == 200

    closed_ids: list[str] = []
    await _drive(40, 8, creator(s, made=closed_ids))
    for eid in closed_ids:
        await s.client.get_workflow_handle(eid).result()
        await _get(s, f"/v1/public/executions/{eid}")  # the API has seen it closed

    async def http_closed(i: int) -> None:
        await _get(s, f"/v1/public/executions/{closed_ids[i % len(closed_ids)]}")

    async def raw_describe(i: int) -> None:
        desc = await s.client.get_workflow_handle(closed_ids[i % len(closed_ids)]).describe()
        await desc.memo_value("state")

    sides = {
        "raw": raw_view,
        "http": http_view,
        "floor": http_floor,
        "aiohttp_floor": aiohttp_floor,
        "httpx_floor": httpx_floor,
        "raw_closed": raw_describe,
        "http_closed": http_closed,
    }
    for side in sides.values():
        await _drive(100, 1, side)
    views: dict[str, list[tuple[float, list[float]]]] = {name: [] for name in sides}
    # Short alternating batches, so drift in machine load hits both sides alike.
    for _ in range(ROUNDS * VIEWS // 50):
        for name, side in sides.items():
            views[name].append(await _drive(50, 1, side))
    return views


async def _get(s: Stack, path: str) -> None:
    status, _body = await s.caller.get(path)
    assert status == 200, status


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _main_thread_ns(pid: int) -> int:
    """CPU time of a process's main thread (where the API's event loop runs), in ns."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


IDLE_GAP = 0.005
"""The gap between requests in :func:`idle_cost`: at ~200 creates/s, each of the API's
events (a request, a Temporal answer) arrives about this long after the one before."""


async def idle_cost(s: Stack, hot: int = 1000, spaced: int = 300) -> dict[str, float] | None:
    """What waking from idle costs on this machine, in µs of CPU: the API's event loop per
    ``GET /healthz`` sent back to back and sent ``IDLE_GAP`` after the previous answer, and
    this process's own loop per bare ``asyncio.sleep(IDLE_GAP)``. On a VM whose CPUs halt
    when idle, code that runs after a pause finds cold caches: the spaced figure, not the
    back-to-back one, is what the API's code costs under the bench's load. None where the
    kernel keeps no per-thread scheduler statistics (``CONFIG_SCHEDSTATS`` off)."""
    if not Path(f"/proc/{s.api.pid}/schedstat").exists():
        return None
    await _drive(200, 1, lambda i: _get(s, "/healthz"))  # warm
    before = _main_thread_ns(s.api.pid)
    for _ in range(hot):
        await _get(s, "/healthz")
    back_to_back = (_main_thread_ns(s.api.pid) - before) / hot / 1000
    before, own = _main_thread_ns(s.api.pid), 0.0
    for _ in range(spaced):
        began = time.thread_time()
        await asyncio.sleep(IDLE_GAP)
        own += time.thread_time() - began
        await _get(s, "/healthz")
    after_idle = (_main_thread_ns(s.api.pid) - before) / spaced / 1000
    return {"hot": back_to_back, "spaced": after_idle, "wake": own / spaced * 1e6}


def idle_cost_line(cost: dict[str, float] | None) -> str:
    if cost is None:
        return "waking from idle on this machine: not measured (no /proc/<pid>/schedstat)"
    return (
        f"waking from idle on this machine (µs of CPU): the API's loop per GET /healthz "
        f"{cost['hot']:.0f} back to back, {cost['spaced']:.0f} after {IDLE_GAP * 1000:.0f} ms "
        f"idle ({cost['spaced'] / cost['hot']:.1f}x); a bare wake of the bench's loop "
        f"{cost['wake']:.0f}"
    )


async def _polls(s: Stack) -> float:
    text = (await s.http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith("tollway_watch_polls_total "):
            return float(line.split()[1])
    return 0.0


async def _parked(s: Stack) -> dict[str, Any]:
    r = await s.http.post(
        f"/v1/public/workflows/{s.priced_id}/executions",
        json={"sourceSystem": "bench", "sourceEntityType": "sse"},
    )
    data: dict[str, Any] = r.json()["data"]
    return data


async def _follow(http: httpx.AsyncClient, url: str, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with http.stream("GET", url, headers=headers, timeout=60) as response:
        async for _line in response.aiter_lines():
            pass


async def _first_change(http: httpx.AsyncClient, url: str, token: str) -> float:
    """When the stream first sends a state past awaiting payment."""
    headers = {"Authorization": f"Bearer {token}"}
    async with http.stream("GET", url, headers=headers, timeout=60) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: ") and '"awaiting_payment"' not in line:
                return time.perf_counter()
    raise RuntimeError("the stream ended without a change")


async def compare_streams(s: Stack, seconds: float = 5.0) -> dict[str, dict[str, float]]:
    """One and then a hundred SSE clients on one open execution: the watcher's view reads
    per second (each a query to Temporal) and the API's CPU, over ``seconds``."""
    out: dict[str, dict[str, float]] = {}
    for clients in (1, 100):
        data = await _parked(s)
        url = f"/v1/public/executions/{data['execution']['id']}/events"
        limits = httpx.Limits(max_connections=clients + 5)
        async with httpx.AsyncClient(base_url=str(s.http.base_url), limits=limits) as sse:
            tasks = [
                asyncio.create_task(_follow(sse, url, data["clientToken"])) for _ in range(clients)
            ]
            await asyncio.sleep(1.0)  # all connected
            polls, cpu, began = await _polls(s), _cpu_seconds(s.api.pid), time.perf_counter()
            await asyncio.sleep(seconds)
            took = time.perf_counter() - began
            out[str(clients)] = {
                "polls_per_s": (await _polls(s) - polls) / took,
                "api_cpu_pct": 100 * (_cpu_seconds(s.api.pid) - cpu) / took,
            }
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return out


async def _capture(s: Stack, execution: dict[str, Any]) -> str:
    """The payer's money taken in the local bank, as its checkout page does."""
    from tollway.local_bank import LocalBank

    bank = LocalBank(s.engine)
    return await asyncio.to_thread(
        bank.capture, execution["id"], execution["checkoutSessionId"], 100, "usd"
    )


async def _post_payment(s: Stack, execution: dict[str, Any], reference: str) -> None:
    """The signed ``checkout.session.completed`` webhook for that payment."""
    from tollway.local_bank import checkout_event, encode, sign

    raw = encode(
        checkout_event(
            "checkout.session.completed",
            execution_id=execution["id"],
            session_id=execution["checkoutSessionId"],
            amount=100,
            currency="usd",
            payment_reference=reference,
        )
    )
    answer = await s.http.post(
        "/v1/webhooks/payments/local",
        content=raw,
        headers={"Stripe-Signature": sign(raw, s.webhook_secret)},
    )
    assert answer.status_code == 200, answer.text


async def webhook_to_event(s: Stack, rounds: int = 20) -> list[float]:
    """From sending a payment webhook to the first event of the new status on an open
    stream (a client following its execution, as the payer's status page does)."""
    latencies = []
    for _ in range(rounds):
        data = await _parked(s)
        execution = data["execution"]
        url = f"/v1/public/executions/{execution['id']}/events"
        task = asyncio.create_task(_first_change(s.http, url, data["clientToken"]))
        await asyncio.sleep(0.3)  # the stream is open and has sent the current state
        reference = await _capture(s, execution)
        sent_at = time.perf_counter()
        await _post_payment(s, execution, reference)
        arrived = await asyncio.wait_for(task, 30)
        latencies.append(arrived - sent_at)
    return latencies


async def _until_running(s: Stack, execution_id: str) -> float:
    """When a query first shows the execution past payment (polled every 2 ms)."""
    handle = s.client.get_workflow_handle_for(ExecutionWorkflow.run, execution_id)
    while True:
        view = await handle.query(ExecutionWorkflow.view)
        if view.status not in {"awaiting_payment", "payment_confirmed"}:
            return time.perf_counter()
        await asyncio.sleep(0.002)


async def compare_payments(s: Stack, rounds: int = 30) -> dict[str, list[float]]:
    """Payment to ``workflow_running``: the signed webhook through the API, against the same
    payment given straight to the workflow as the raw update; both observed the same way."""
    from workflows.models import PaymentEventKind, PaymentNotice

    out: dict[str, list[float]] = {"http": [], "raw": []}
    for n in range(2 * rounds):
        side = "http" if n % 2 else "raw"
        execution = (await _parked(s))["execution"]
        reference = await _capture(s, execution)
        await _quiet()  # the parked execution's own start worked off first
        began = time.perf_counter()
        if side == "http":
            await _post_payment(s, execution, reference)
        else:
            handle = s.client.get_workflow_handle_for(ExecutionWorkflow.run, execution["id"])
            await handle.execute_update(
                ExecutionWorkflow.payment_event,
                PaymentNotice(
                    event_id=f"evt_raw_{uuid.uuid4().hex}",
                    kind=PaymentEventKind.PAID,
                    provider="local",
                    checkout_session_id=execution["checkoutSessionId"],
                    payment_reference=reference,
                    amount=100,
                    currency="usd",
                    livemode=False,
                ),
            )
        out[side].append(await _until_running(s, execution["id"]) - began)
    return out


@asynccontextmanager
async def floor_front(s: Stack) -> AsyncIterator[Caller]:
    """The least front in Tollway's shape (bench/floor_front.py) in a process of its own beside
    the API, in the API's environment, watched like it; a caller for it."""
    port = _port()
    env = {
        **s.env,
        floor.ORGANIZATION_ENV: s.org_id,
        floor.TOKEN_ENV: s.token_id,
        floor.WORKFLOW_ENV: s.workflow_id,
    }
    # Its warnings and a failed start-up go to the bench's own stderr.
    proc = subprocess.Popen(_uvicorn("bench.floor_front:serve", port), env=env)
    caller = Caller("127.0.0.1", port, {}, CONCURRENCY)
    try:
        await _wait_http(f"http://127.0.0.1:{port}/")
        WATCHED["floor"] = proc.pid
        yield caller
    finally:
        WATCHED.pop("floor", None)
        caller.close()
        proc.terminate()
        proc.wait(timeout=20)


async def compare_temporal_http(s: Stack) -> Rounds:
    """Tollway's create against starting the same workflow through Temporal's own HTTP API
    (``start-dev --http-port``) on the same server, at the same concurrency, through the
    same caller. ``temporal_http`` makes the start Tollway makes (its search attributes,
    summary, details, task timeout and reuse policy: the shared part serialised once, as a
    careful caller would); ``temporal_http_bare`` only the type, queue and input; ``floor``
    is the same create through the least front in Tollway's shape (bench/floor_front.py)."""
    run_id = uuid.uuid4().hex[:6]
    converter = s.client.data_converter
    started: list[str] = []
    template = await DirectCalls(s.client).template(_plan(s, "shape", 0).shape)
    shared = json.loads(MessageToJson(template))
    bare = {"workflowType": {"name": EXECUTION_WORKFLOW}, "taskQueue": {"name": s.task_queue}}
    api = Caller("127.0.0.1", s.temporal_http_port, {}, CONCURRENCY)

    def starter(template: dict[str, Any]) -> Callable[[int], Awaitable[None]]:
        async def temporal_http_start(i: int) -> None:
            key = f"t-{run_id}-{i}-{time.perf_counter_ns()}"
            inp = _plan(s, key, i).input
            eid = inp.execution_id
            [payload] = await converter.encode([inp])  # encrypted, as the worker expects
            body = {
                **template,
                "workflowId": eid,
                "input": {"payloads": [json.loads(MessageToJson(payload))]},
                "requestId": key,
            }
            # Canonical protobuf JSON (the encrypted payload as it is), not the shorthand.
            status, answer = await api.post_json(
                f"/api/v1/namespaces/default/workflows/{eid}?noPayloadShorthand", body
            )
            assert status == 200, answer
            started.append(eid)

        return temporal_http_start

    async def drain() -> None:
        """A start returns before any workflow code runs: let the worker catch up, so
        the next round does not queue behind this one's backlog."""
        await asyncio.gather(*(s.client.get_workflow_handle(i).result() for i in started))
        started.clear()

    try:
        async with floor_front(s) as least:
            sides = {
                "temporal_http": starter(shared),
                "temporal_http_bare": starter(bare),
                "http": creator(s, made=started),
                "floor": creator(s, made=started, caller=least),
            }
            return await _rounds("temporal_http", sides, drain)
    finally:
        api.close()


def _counted(metrics: str, metric: str, label: str) -> dict[str, float]:
    """One of the API's labelled counters, by label value, from its /metrics text."""
    out: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith(f"{metric}_total{{"):
            name = line.split(f'{label}="', 1)[1].split('"', 1)[0]
            out[name] = float(line.rsplit(" ", 1)[1])
    return out


async def _calls(s: Stack) -> dict[str, float]:
    return _counted((await s.http.get("/metrics")).text, "tollway_temporal_calls", "call")


async def _cache_loads(s: Stack) -> tuple[dict[str, float], float]:
    """The API's database reads behind its caches, and its free starts, so far (one read of
    its /metrics)."""
    metrics = (await s.http.get("/metrics")).text
    starts = _counted(metrics, "tollway_temporal_calls", "call").get("start_workflow", 0.0)
    return _counted(metrics, "tollway_cache_loads", "cache"), starts


def cache_loads_line(
    before: tuple[dict[str, float], float], after: tuple[dict[str, float], float]
) -> str:
    """Database reads behind the API's caches per 1 000 HTTP creates (token, workflow and
    endpoints; one each per key and refresh, however many requests are in flight)."""
    starts = max(after[1] - before[1], 1.0)
    shown = ", ".join(
        f"{name} {(after[0][name] - before[0].get(name, 0.0)) * 1000 / starts:.1f}"
        for name in sorted(after[0])
    )
    return (
        f"create comparison: the API's database reads behind its caches, per 1000 creates: {shown}"
    )


async def calls_per_operation(s: Stack) -> dict[str, dict[str, float]]:
    """The API's calls to Temporal for one of each operation (from its own counter)."""

    key = f"calls-{uuid.uuid4().hex}"
    body = {"sourceSystem": "bench", "sourceEntityType": "c", "idempotencyKey": key}
    created: dict[str, Any] = {}

    async def create() -> None:
        r = await s.http.post(f"/v1/public/workflows/{s.priced_id}/executions", json=body)
        created.update(r.json()["data"]["execution"])

    async def view() -> None:
        assert (await s.http.get(f"/v1/public/executions/{created['id']}")).status_code == 200

    async def webhook() -> None:
        await _post_payment(s, created, await _capture(s, created))

    async def closed() -> None:
        handle = s.client.get_workflow_handle(created["id"])
        await handle.result()

    out: dict[str, dict[str, float]] = {}
    for name, action in (
        ("create", create), ("replay", create), ("view (open)", view), ("webhook", webhook),
        ("", closed), ("view (closed)", view), ("view (closed, again)", view),
    ):  # fmt: skip
        before = await _calls(s)
        await action()
        after = await _calls(s)
        if name:
            out[name] = {k: v - before.get(k, 0) for k, v in after.items() if v > before.get(k, 0)}
    return out


async def main() -> None:
    async with stack() as s:
        idle = await idle_cost(s)
        loads_before = await _cache_loads(s)
        creates = await compare_creates(s)
        loads = cache_loads_line(loads_before, await _cache_loads(s))
        priced = await compare_priced_creates(s)
        views = await compare_views(s)
        calls = await calls_per_operation(s)
        streams = await compare_streams(s)
        webhook = await webhook_to_event(s)
        payments = await compare_payments(s)
        temporal_http = await compare_temporal_http(s)
    print(describe_layout())
    print(f"gRPC compression to Temporal, the raw client's as the API's: {GRPC_COMPRESSION}")
    print(idle_cost_line(idle))
    report(creates, views)
    print(loads)
    p = {k: _summary(v) for k, v in priced.items()}
    print(
        f"priced create (update-with-start, answered after the workflow's first task), "
        f"concurrency {CONCURRENCY}, {ROUNDS}x{CREATES} per side:\n"
        f"  raw update-with-start  {p['raw']['rate']:7.1f}/s  p50 {p['raw']['p50']:6.1f} ms"
        f"  p99 {p['raw']['p99']:6.1f} ms\n"
        f"  HTTP POST              {p['http']['rate']:7.1f}/s  p50 {p['http']['p50']:6.1f} ms"
        f"  p99 {p['http']['p99']:6.1f} ms\n"
        f"  throughput ratio HTTP/raw = {p['http']['rate'] / p['raw']['rate']:.2f}  (aim >= 0.95)\n"
        f"  p99 ratio HTTP/raw = {p['http']['p99'] / p['raw']['p99']:.2f}  (aim <= 1.2)\n"
        f"  throughput ratio HTTP/raw {round_ratios(priced, 'http', 'raw')}\n"
        f"  the machine's CPUs busy while each side ran: {machine_busy('priced')}\n"
        "  CPU per create by process (ms), during the rounds and until cleared:\n"
        + "\n".join(process_cpu("priced"))
    )
    print("Temporal calls by the API, per operation:")
    for name, counted in calls.items():
        shown = ", ".join(f"{k} {int(v)}" for k, v in sorted(counted.items()))
        print(f"  {name:14s} {int(sum(counted.values()))}  ({shown})")
    t = {k: _summary(v) for k, v in temporal_http.items()}
    same, bare, ours, least = (
        t["temporal_http"], t["temporal_http_bare"], t["http"], t["floor"]
    )  # fmt: skip
    print(
        f"create vs Temporal's own HTTP API (start workflow), concurrency {CONCURRENCY}, "
        f"the same caller:\n"
        f"  Temporal HTTP API, Tollway's start  {same['rate']:7.1f}/s  p50 {same['p50']:6.1f} ms\n"
        f"  Temporal HTTP API, bare start       {bare['rate']:7.1f}/s  p50 {bare['p50']:6.1f} ms\n"
        f"  Tollway HTTP POST                   {ours['rate']:7.1f}/s  p50 {ours['p50']:6.1f} ms\n"
        f"  the least front (bench/floor_front) {least['rate']:7.1f}/s  "
        f"p50 {least['p50']:6.1f} ms\n"
        f"  throughput ratio Tollway/Temporal HTTP = {ours['rate'] / same['rate']:.2f}"
        f"  (aim >= 1; against the bare start {ours['rate'] / bare['rate']:.2f})\n"
        f"  throughput ratio Tollway/Temporal HTTP "
        f"{round_ratios(temporal_http, 'http', 'temporal_http')}\n"
        f"  throughput ratio least front/Temporal HTTP = {least['rate'] / same['rate']:.2f}, "
        f"{round_ratios(temporal_http, 'floor', 'temporal_http')}\n"
        f"  throughput ratio Tollway/least front = {ours['rate'] / least['rate']:.2f}\n"
        f"  the bench process's CPU per create: {caller_cpu('temporal_http')}\n"
        f"  the machine's CPUs busy while each side ran: {machine_busy('temporal_http')}\n"
        "  CPU per create by process (ms), during the rounds and until drained:\n"
        + "\n".join(process_cpu("temporal_http"))
    )
    raw_p50, http_p50 = _pct(payments["raw"], 0.5), _pct(payments["http"], 0.5)
    print(
        f"payment -> workflow_running, {len(payments['raw'])} each, alternating:\n"
        f"  raw payment update     p50 {raw_p50:6.1f} ms\n"
        f"  signed webhook (HTTP)  p50 {http_p50:6.1f} ms\n"
        f"  p50 ratio HTTP/raw = {http_p50 / raw_p50:.2f}"
    )
    one, hundred = streams["1"], streams["100"]
    print(
        "event streams on one open execution, 5 s each:\n"
        f"    1 client    {one['polls_per_s']:5.1f} Temporal queries/s  API CPU "
        f"{one['api_cpu_pct']:5.1f} %\n"
        f"  100 clients   {hundred['polls_per_s']:5.1f} Temporal queries/s  API CPU "
        f"{hundred['api_cpu_pct']:5.1f} %\n"
        f"payment webhook -> first status event on an open stream, {len(webhook)} rounds: "
        f"p50 {_pct(webhook, 0.5):.0f} ms  p99 {_pct(webhook, 0.99):.0f} ms"
    )


def round_ratios(rounds: Rounds, side: str, against: str) -> str:
    """Each round's throughput ratio ``side``/``against``, in order (round n of each side ran
    in the same pass over the sides as the other's round n), and their range: how far one
    run's figure can move with the machine while the code stays the same."""
    pairs = zip(rounds[side], rounds[against], strict=True)
    ratios = [mine / theirs for (mine, _), (theirs, _) in pairs]
    shown = " ".join(f"{r:.2f}" for r in ratios)
    return f"per round {shown} (range {min(ratios):.2f}-{max(ratios):.2f})"


def _summary(runs: list[tuple[float, list[float]]]) -> dict[str, float]:
    latencies = [x for _, lat in runs for x in lat]
    return {
        "rate": statistics.mean(rate for rate, _ in runs),
        "p50": _pct(latencies, 0.5),
        "p99": _pct(latencies, 0.99),
    }


def report(creates: dict[str, Any], views: dict[str, Any]) -> None:
    print("\n".join(report_lines(creates, views)))


def report_lines(creates: dict[str, Any], views: dict[str, Any]) -> list[str]:
    c = {k: _summary(v) for k, v in creates.items()}
    v = {k: _summary(x) for k, x in views.items()}
    lines = [
        f"create, concurrency {CONCURRENCY}, {ROUNDS}x{CREATES} per side:",
        f"  raw start_workflow     {c['raw']['rate']:7.1f}/s  p50 {c['raw']['p50']:6.1f} ms"
        f"  p99 {c['raw']['p99']:6.1f} ms",
        f"  HTTP POST              {c['http']['rate']:7.1f}/s  p50 {c['http']['p50']:6.1f} ms"
        f"  p99 {c['http']['p99']:6.1f} ms",
        f"  HTTP POST via aiohttp  {c['http_aiohttp']['rate']:7.1f}/s  p50 "
        f"{c['http_aiohttp']['p50']:6.1f} ms  p99 {c['http_aiohttp']['p99']:6.1f} ms",
        f"  throughput ratio HTTP/raw = {c['http']['rate'] / c['raw']['rate']:.2f}  (aim >= 0.95;"
        f" via aiohttp {c['http_aiohttp']['rate'] / c['raw']['rate']:.2f})",
        f"  p99 ratio HTTP/raw = {c['http']['p99'] / c['raw']['p99']:.2f}  (aim <= 1.2)",
        "  throughput ratio HTTP/raw " + round_ratios(creates, "http", "raw"),
        "  the bench process's CPU per create (the caller's, on the cores the server shares): "
        + caller_cpu("create"),
        "  the machine's CPUs busy while each side ran: " + machine_busy("create"),
        "  CPU per create by process (ms), during the rounds and until drained:",
        *process_cpu("create"),
        f"view, sequential, {ROUNDS}x{VIEWS} per side, open executions:",
        f"  raw query              {v['raw']['rate']:7.1f}/s  p50 {v['raw']['p50']:6.1f} ms"
        f"  p99 {v['raw']['p99']:6.1f} ms",
        f"  HTTP GET               {v['http']['rate']:7.1f}/s  p50 {v['http']['p50']:6.1f} ms"
        f"  p99 {v['http']['p99']:6.1f} ms",
        f"  p50 ratio HTTP/raw = {v['http']['p50'] / v['raw']['p50']:.2f}  (aim <= 1.2)",
        f"  HTTP floor (GET /healthz through the same client): p50 {v['floor']['p50']:.2f} ms"
        f" (through aiohttp: {v['aiohttp_floor']['p50']:.2f} ms, httpx:"
        f" {v['httpx_floor']['p50']:.2f} ms)",
        f"view, sequential, {ROUNDS}x{VIEWS} per side, closed executions:",
        f"  raw describe           {v['raw_closed']['rate']:7.1f}/s  p50 "
        f"{v['raw_closed']['p50']:6.1f} ms  p99 {v['raw_closed']['p99']:6.1f} ms",
        f"  HTTP GET               {v['http_closed']['rate']:7.1f}/s  p50 "
        f"{v['http_closed']['p50']:6.1f} ms  p99 {v['http_closed']['p99']:6.1f} ms",
        f"  p50 ratio HTTP/raw = {v['http_closed']['p50'] / v['raw_closed']['p50']:.2f}"
        "  (aim <= 1.2)",
    ]
    return lines


if __name__ == "__main__":
    import uvloop  # the loop uvicorn runs the API on; both sides of the bench share it

    uvloop.run(main())
    sys.stdout.flush()
    os._exit(0)  # sdk-python#300: avoid the interpreter-exit crash after a client was used
