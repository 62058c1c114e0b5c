"""`make bench`: the HTTP layer against the raw temporalio client, side by side in one run.

One Temporal dev server, one worker process and one API process (uvicorn, real HTTP on
loopback). Creates: HTTP POST versus the raw update-with-start doing the same Temporal work,
at concurrency 32, in alternating rounds. Views: HTTP GET versus a raw query on the same open
executions, sequentially. Prints throughput, p50/p99 and the ratios.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter

from tollway import admin
from tollway.codec import with_codec
from tollway.db import make_engine
from tollway.definitions import parse_definition
from tollway.devstack import dev_secrets
from tollway.ids import execution_id
from tollway.migrate import migrate
from tollway.temporal_server import start_dev_command
from workflows.execution import ExecutionWorkflow
from workflows.models import AttachInput, ExecutionInput, ExecutionRequest

CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))
CREATES = int(os.environ.get("BENCH_CREATES", "400"))  # per side, per round
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
VIEWS = int(os.environ.get("BENCH_VIEWS", "400"))
DEFINITION = {
    "name": "Bench",
    "access": "public_execute",
    "steps": [{"id": "s", "kind": "transform", "expression": "{n: request.n}"}],
    "output": "steps.s",
}


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


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


async def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="tollway-bench-"))
    temporal_port, api_port = _port(), _port()
    db_url = f"sqlite:///{workdir / 'bench.db'}"
    task_queue = f"bench-{uuid.uuid4().hex[:8]}"
    generated = dev_secrets(workdir / "secrets.json")
    env = {
        **os.environ,
        **generated,
        "TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
        "DATABASE_URL": db_url,
        "TOLLWAY_TASK_QUEUE": task_queue,
        "TOLLWAY_AUTH_CACHE_SECONDS": "5",
        "TOLLWAY_WORKER_METRICS_PORT": "0",
    }
    engine = make_engine(db_url)
    migrate(engine)
    org = admin.create_organization(engine, "Bench")
    _row, token = admin.create_token(engine, org.id, "1000000/second")
    wf = admin.create_workflow(engine, org.id, parse_definition(DEFINITION))
    priced = admin.create_workflow(
        engine,
        org.id,
        parse_definition({**DEFINITION, "price": {"amount": 100, "currency": "usd"}}),
    )
    record = admin.find_workflow(engine, wf.id)
    assert record is not None

    log = (workdir / "temporal.log").open("wb")
    procs = [
        subprocess.Popen(
            start_dev_command(workdir / "temporal.db", temporal_port, None), stdout=log, stderr=log
        )
    ]
    try:
        client = None
        for _ in range(100):
            try:
                # The raw side encrypts its payloads too: the same Temporal work.
                client = await Client.connect(
                    f"127.0.0.1:{temporal_port}",
                    data_converter=with_codec(
                        pydantic_data_converter, generated["TOLLWAY_PAYLOAD_KEYS"]
                    ),
                )
                break
            except RuntimeError:
                await asyncio.sleep(0.1)
        assert client is not None
        procs.append(
            subprocess.Popen([sys.executable, "-m", "worker"], env=env, stderr=subprocess.DEVNULL)
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "api.app:serve_app",
                    "--factory",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(api_port),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                env=env,
            )
        )
        base = f"http://127.0.0.1:{api_port}"
        await _wait_http(f"{base}/healthz")
        auth = {"Authorization": f"Bearer {token}"}
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        async with httpx.AsyncClient(
            base_url=base, headers=auth, limits=limits, timeout=60
        ) as http:
            run_id = uuid.uuid4().hex[:6]

            async def http_create(i: int) -> None:
                r = await http.post(
                    f"/v1/public/workflows/{wf.id}/executions",
                    json={
                        "sourceSystem": "bench",
                        "sourceEntityType": "n",
                        "idempotencyKey": f"h-{run_id}-{i}-{time.perf_counter_ns()}",
                        "requestPayload": {"n": i},
                    },
                )
                assert r.status_code == 200, r.text

            async def raw_create(i: int) -> None:
                key = f"r-{run_id}-{i}-{time.perf_counter_ns()}"
                eid = execution_id(org.id, wf.id, key)
                inp = ExecutionInput(
                    execution_id=eid,
                    organization_id=org.id,
                    initiated_by_id="bench",
                    initiated_by_type="api_token",
                    public_workflow_id=wf.id,
                    workflow_version=1,
                    definition=record.definition,
                    request=ExecutionRequest(
                        sourceSystem="bench",
                        sourceEntityType="n",
                        idempotencyKey=key,
                        requestPayload={"n": i},
                    ),
                    fingerprint=key,
                )
                start = WithStartWorkflowOperation(
                    ExecutionWorkflow.run,
                    inp,
                    id=eid,
                    task_queue=task_queue,
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                )
                await client.execute_update_with_start_workflow(
                    ExecutionWorkflow.attach,
                    AttachInput(fingerprint=key, nonce="n"),
                    start_workflow_operation=start,
                    id=f"create-{key[:40]}",
                )

            await _drive(64, 8, http_create)  # warm both paths
            await _drive(64, 8, raw_create)
            results: dict[str, list[tuple[float, list[float]]]] = {"http": [], "raw": []}
            for _ in range(ROUNDS):
                results["raw"].append(await _drive(CREATES, CONCURRENCY, raw_create))
                results["http"].append(await _drive(CREATES, CONCURRENCY, http_create))

            open_ids = []
            for i in range(20):
                r = await http.post(
                    f"/v1/public/workflows/{priced.id}/executions",
                    json={
                        "sourceSystem": "bench",
                        "sourceEntityType": "v",
                        "requestPayload": {"n": i},
                    },
                )
                open_ids.append(r.json()["data"]["execution"]["id"])

            async def http_view(i: int) -> None:
                r = await http.get(f"/v1/public/executions/{open_ids[i % len(open_ids)]}")
                assert r.status_code == 200

            async def raw_view(i: int) -> None:
                handle = client.get_workflow_handle_for(
                    ExecutionWorkflow.run, open_ids[i % len(open_ids)]
                )
                await handle.query(ExecutionWorkflow.view)

            async def http_floor(i: int) -> None:
                assert (await http.get("/healthz")).status_code == 200

            await _drive(100, 1, http_view)
            await _drive(100, 1, raw_view)
            views: dict[str, list[tuple[float, list[float]]]] = {"http": [], "raw": [], "floor": []}
            # Short alternating batches, so drift in machine load hits both sides alike.
            for _ in range(ROUNDS * VIEWS // 50):
                views["raw"].append(await _drive(50, 1, raw_view))
                views["http"].append(await _drive(50, 1, http_view))
                views["floor"].append(await _drive(50, 1, http_floor))
        report(results, views)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=20)


def _summary(runs: list[tuple[float, list[float]]]) -> dict[str, float]:
    latencies = [x for _, lat in runs for x in lat]
    return {
        "rate": statistics.mean(rate for rate, _ in runs),
        "p50": _pct(latencies, 0.5),
        "p99": _pct(latencies, 0.99),
    }


def report(creates: dict[str, Any], views: dict[str, Any]) -> None:
    c = {k: _summary(v) for k, v in creates.items()}
    v = {k: _summary(x) for k, x in views.items()}
    lines = [
        f"create, concurrency {CONCURRENCY}, {ROUNDS}x{CREATES} per side:",
        f"  raw update-with-start  {c['raw']['rate']:7.1f}/s  p50 {c['raw']['p50']:6.1f} ms"
        f"  p99 {c['raw']['p99']:6.1f} ms",
        f"  HTTP POST              {c['http']['rate']:7.1f}/s  p50 {c['http']['p50']:6.1f} ms"
        f"  p99 {c['http']['p99']:6.1f} ms",
        f"  throughput ratio HTTP/raw = {c['http']['rate'] / c['raw']['rate']:.2f}  (aim >= 0.8)",
        f"view, sequential, {ROUNDS}x{VIEWS} per side, open executions:",
        f"  raw query              {v['raw']['rate']:7.1f}/s  p50 {v['raw']['p50']:6.1f} ms"
        f"  p99 {v['raw']['p99']:6.1f} ms",
        f"  HTTP GET               {v['http']['rate']:7.1f}/s  p50 {v['http']['p50']:6.1f} ms"
        f"  p99 {v['http']['p99']:6.1f} ms",
        f"  p50 ratio HTTP/raw = {v['http']['p50'] / v['raw']['p50']:.2f}  (aim <= 1.5)",
        f"  HTTP floor (GET /healthz through the same client): p50 {v['floor']['p50']:.1f} ms",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    import uvloop  # the loop uvicorn runs the API on; both sides of the bench share it

    uvloop.run(main())
    sys.stdout.flush()
    os._exit(0)  # sdk-python#300: avoid the interpreter-exit crash after a client was used
