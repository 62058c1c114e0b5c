"""The least an HTTP front in Tollway's shape can do for a free create, for `make bench` only.

Tollway's create is an HTTP request to a Python process that starts a Temporal workflow over
gRPC. Temporal's own HTTP API has no such hop: the dev server turns the JSON into the start
inside its own process. To show how much of the difference is the hop itself and how much is
Tollway's own work, the bench runs this front beside the API, under the same uvicorn and
protocol, in a process of its own.

It does only what no front can skip: read the body and validate it, plan the start with the
API's own ``plan_start``, encode and encrypt the input, and start the workflow with the API's
own direct call. The execution it starts is the one the API would start for the same body and
key. It leaves out everything Tollway adds on top: the token lookup and access check, the
view, the client token, request ids, logs and metrics, and every error answer but a 500.
Tollway never serves it.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

from starlette.types import Receive, Scope, Send
from temporalio.client import Client

from api.bodies import CreateExecutionBody
from tollway import admin
from tollway.admin import WorkflowRecord
from tollway.db import make_engine
from tollway.direct_calls import DirectCalls
from tollway.executions import CreateCommand, StartPlan, plan_start
from tollway.settings import Settings
from tollway.temporal import connect
from workflows.models import ExecutionRequest

_JSON = [(b"content-type", b"application/json")]


class FloorFront:
    """A POST of the create body (any path) starts the execution and answers its id; any
    other request answers ``ok`` (the bench waits for it to come up)."""

    def __init__(
        self,
        settings: Settings,
        client: Client,
        record: WorkflowRecord,
        organization_id: str,
        token_id: str,
    ) -> None:
        self._settings = settings
        self._direct = DirectCalls(client)
        self._record = record
        self._organization_id = organization_id
        self._token_id = token_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            await _answer(send, b"ok", [(b"content-type", b"text/plain")])
            return
        body = CreateExecutionBody.model_validate_json(await _body(receive))
        settings = self._settings
        plan = plan_create(
            body, self._organization_id, self._token_id, self._record,
            settings.task_queue, settings.public_base_url,
        )  # fmt: skip
        eid = plan.input.execution_id
        await self._direct.start(plan.shape, eid, [plan.input], plan.own)
        await _answer(send, json.dumps({"data": {"execution": {"id": eid}}}).encode(), _JSON)


def plan_create(
    body: CreateExecutionBody,
    organization_id: str,
    token_id: str,
    record: WorkflowRecord,
    task_queue: str,
    public_base_url: str,
) -> StartPlan:
    """The start the API plans for this body (its key in the body) from this caller: the
    same input, fingerprint, search attributes, summary and details, by the API's own
    ``plan_start``. The bench's raw sides plan theirs with it too."""
    command = CreateCommand(
        organization_id=organization_id,
        initiated_by_id=token_id,
        workflow=record,
        request=ExecutionRequest(**body.model_dump()),
        fingerprint=body.fingerprint(),
    )
    return plan_start(command, task_queue, public_base_url, datetime.now(UTC))


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(send: Send, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    length = (b"content-length", str(len(body)).encode())
    await send({"type": "http.response.start", "status": 200, "headers": [*headers, length]})
    await send({"type": "http.response.body", "body": body})


ORGANIZATION_ENV, TOKEN_ENV, WORKFLOW_ENV = (
    "BENCH_FLOOR_ORGANIZATION",
    "BENCH_FLOOR_TOKEN_ID",
    "BENCH_FLOOR_WORKFLOW",
)


def serve() -> object:
    """``uvicorn --factory bench.floor_front:serve``: Tollway's settings from the environment
    (as the API reads them), the caller and the workflow from ``BENCH_FLOOR_*``; connects to
    Temporal and reads the workflow at start-up."""
    front: FloorFront | None = None

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal front
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                settings = Settings()
                record = admin.find_workflow(
                    make_engine(settings.database_url), os.environ[WORKFLOW_ENV]
                )
                assert record is not None, "the bench's workflow is missing"
                front = FloorFront(
                    settings,
                    await connect(settings),
                    record,
                    os.environ[ORGANIZATION_ENV],
                    os.environ[TOKEN_ENV],
                )
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        assert front is not None
        await front(scope, receive, send)

    return app
