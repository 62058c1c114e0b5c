"""The OpenAPI 3.1 document served at ``/openapi.json``, built from the pydantic models the
handlers use: the create body (``CreateExecutionBody``) and the execution (``ExecutionView``,
shaped as the full and the client-safe view exactly as ``api.views`` shapes it). Every answer a
route can give is listed with its envelope; ``tests/test_openapi.py`` runs schemathesis over
the document against the running API and worker to keep it true."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from pydantic.json_schema import models_json_schema

from api.bodies import MAX_KEY_LENGTH, NO_CONTROL, CreateExecutionBody
from tollway.executions import ExecutionSummary
from tollway.views import CLIENT_FIELDS, INTERNAL_FIELDS
from workflows.models import ExecutionView, PaymentStatus, Status

REF = "#/components/schemas/{model}"
JSON = "application/json"

_DESCRIPTIONS = {
    400: "Invalid input; `errors` names each bad field (`field`, `message`, `code`?).",
    401: "A valid token is required (`WWW-Authenticate: Bearer`).",
    403: "The token may not do this (scope, access, disabled workflow).",
    404: "No such resource for this token (an execution of another organization is not found).",
    405: "The path exists, not with this method (`Allow` lists those it has).",
    409: "The resource is in a state that does not allow this.",
    413: "The body is larger than this route accepts.",
    429: "Rate limited; `Retry-After` says when to try again.",
    500: "A fault of Tollway, logged with the `requestId` of the answer.",
    503: "A dependency (Temporal or the database) did not answer; nothing is lost, retry.",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _envelope(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["code", "data", "message", "requestId"],
        "properties": {
            "code": {"const": 200},
            "data": data,
            "message": {"const": "success"},
            "requestId": {"type": "string"},
        },
    }


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _components() -> dict[str, Any]:
    _keys, generated = models_json_schema(
        [
            (CreateExecutionBody, "validation"),
            (ExecutionView, "serialization"),
            (ExecutionSummary, "serialization"),
        ],
        ref_template=REF,
    )
    schemas: dict[str, Any] = generated["$defs"]
    view = schemas.pop(ExecutionView.__name__)
    full = copy.deepcopy(view)
    for name in INTERNAL_FIELDS:
        full["properties"].pop(name, None)
        if name in full.get("required", []):
            full["required"].remove(name)
    full["additionalProperties"] = False
    schemas[ExecutionSummary.__name__]["additionalProperties"] = False
    full["title"] = "Execution"
    full["description"] = "The full view: the creating organization's API tokens."
    client = {
        "title": "ClientExecution",
        "description": "The client-safe view: the execution's own client token.",
        "type": "object",
        "required": list(CLIENT_FIELDS),
        "properties": {name: copy.deepcopy(view["properties"][name]) for name in CLIENT_FIELDS},
        "additionalProperties": False,
    }
    schemas |= {
        "Execution": full,
        "ClientExecution": client,
        "FieldError": _object(
            ["field", "message"],
            field={"type": "string"},
            message={"type": "string"},
            code={"type": "string"},
        ),
        "Error": {
            "type": "object",
            "required": ["code", "data", "error", "message", "requestId"],
            "properties": {
                "code": {"type": "integer", "minimum": 400, "maximum": 599},
                "data": {"type": "null"},
                "error": {"type": "string", "description": "the machine-readable reason"},
                "message": {"type": "string"},
                "requestId": {"type": "string"},
                "errors": {"type": "array", "items": _ref("FieldError")},
            },
        },
        "AlreadyEnded": {
            "type": "object",
            "required": ["code", "data", "error", "message", "requestId"],
            "properties": {
                "code": {"const": 409},
                "data": _object(["execution"], execution=_ref("Execution")),
                "error": {"const": "already_terminal"},
                "message": {"type": "string"},
                "requestId": {"type": "string"},
            },
        },
    }
    return {
        "schemas": schemas,
        "securitySchemes": {
            "apiToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "An organization's API token (`tw_…`).",
            },
            "clientToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "An execution's client token (`ct_…`): read-only, that execution.",
            },
            "clientTokenQuery": {"type": "apiKey", "in": "query", "name": "client_token"},
            "callbackToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "The token of a `wait_for_callback` step, from the full view.",
            },
        },
    }


def _responses(
    ok: dict[str, Any], *codes: int, conflict: str = "Error", ok_type: str = JSON
) -> dict[str, Any]:
    """The 200 answer (a schema, or a whole response object) and each error status."""
    first = ok if "content" in ok else {"description": "OK", "content": {ok_type: {"schema": ok}}}
    out: dict[str, Any] = {"200": first}
    for code in sorted({*codes, 404, 405, 500}):
        schema = _ref(conflict) if code == 409 else _ref("Error")
        out[str(code)] = {"description": _DESCRIPTIONS[code], "content": {JSON: {"schema": schema}}}
    return out


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}  # fmt: skip


_IDENTIFIER = {"type": "string", "pattern": NO_CONTROL}
_PREFER = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "`wait=N` (RFC 7240, N <= 60): hold the answer until the execution has "
    "ended or waits on the outside world (payment, a callback), or N seconds passed; the "
    "answer then says `Preference-Applied: wait=N`.",
}
_LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "The `id` of the last event received: only a newer state is sent.",
}
_EXECUTION_ID = _path("executionId", "The execution's id (`exe_…`).")
_CLIENT_TOKEN = _query("client_token", {"type": "string"}, "The client token, for browsers.")
_READERS: list[dict[str, list[str]]] = [
    {"apiToken": []},
    {"clientToken": []},
    {"clientTokenQuery": []},
]
_ONE_EXECUTION = _envelope(
    _object(
        ["execution"],
        execution={"oneOf": [_ref("Execution"), _ref("ClientExecution")]},
    )
)
#: One Server-Sent Event, as parsed: ``execution`` carries the view as JSON in ``data``.
_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"enum": ["execution", "reconnect"]},
        "data": {"type": "string", "contentMediaType": JSON},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}
_FULL_EXECUTION = _envelope(_object(["execution"], execution=_ref("Execution")))


def _paths() -> dict[str, Any]:
    return {
        "/v1/public/workflows/{id}/executions": {
            "parameters": [_path("id", "The published workflow's id (`wf_…`).")],
            "post": {
                "operationId": "createExecution",
                "summary": "Create an execution session",
                "description": "Starts the execution (awaiting payment when the workflow has a "
                "price). The same idempotency key with the same body answers the same execution "
                "(`Idempotent-Replayed: true`); with another body, 400 `idempotency_key_reused`.",
                "security": [{"apiToken": []}],
                "parameters": [
                    _PREFER,
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {**_IDENTIFIER, "minLength": 1, "maxLength": MAX_KEY_LENGTH},
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref(CreateExecutionBody.__name__)}},
                },
                "responses": _responses(
                    _envelope(
                        _object(
                            ["clientToken", "checkoutUrl", "execution"],
                            clientToken={"type": "string"},
                            checkoutUrl={"type": ["string", "null"]},
                            execution=_ref("Execution"),
                        )
                    ),
                    400,
                    401,
                    403,
                    413,
                    429,
                    503,
                ),  # fmt: skip
            },
            "get": {
                "operationId": "listExecutions",
                "summary": "List this organization's executions of a workflow, newest first",
                "security": [{"apiToken": []}],
                "parameters": [
                    _query("status", {"enum": [s.value for s in Status]}, "Only this status."),
                    _query(
                        "paymentStatus",
                        {"enum": [s.value for s in PaymentStatus]},
                        "Only this payment status (as it was when the execution closed).",
                    ),
                    _query("sourceSystem", _IDENTIFIER, "Only this sourceSystem."),
                    _query("sourceEntityType", _IDENTIFIER, "Only this sourceEntityType."),
                    _query("sourceEntityId", _IDENTIFIER, "Only this sourceEntityId."),
                    _query("externalRef", _IDENTIFIER, "Only this externalRef."),
                    _query(
                        "createdAfter",
                        {"type": "string", "format": "date-time"},
                        "Created at or after this instant (RFC 3339, with its offset).",
                    ),
                    _query(
                        "createdBefore",
                        {"type": "string", "format": "date-time"},
                        "Created before this instant; later than createdAfter.",
                    ),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                        "Page size.",
                    ),  # fmt: skip
                    _query("cursor", {"type": "string"}, "`nextCursor` of the previous page."),
                ],
                "responses": _responses(
                    _envelope(
                        _object(
                            ["executions", "nextCursor", "hasMore"],
                            executions={"type": "array", "items": _ref(ExecutionSummary.__name__)},
                            nextCursor={"type": ["string", "null"]},
                            hasMore={"type": "boolean"},
                        )
                    ),
                    400,
                    401,
                    403,
                    429,
                    503,
                ),  # fmt: skip
            },
        },
        "/v1/public/executions/{executionId}": {
            "parameters": [_EXECUTION_ID],
            "get": {
                "operationId": "getExecution",
                "summary": "Read an execution",
                "description": "The full view to the creating organization's API tokens, the "
                "client-safe view to the execution's client token.",
                "security": _READERS,
                "parameters": [_CLIENT_TOKEN, _PREFER],
                "responses": _responses(_ONE_EXECUTION, 401, 403, 429, 503),
            },
        },
        "/v1/public/executions/{executionId}/cancel": {
            "parameters": [_EXECUTION_ID],
            "post": {
                "operationId": "cancelExecution",
                "summary": "Cancel an execution (a paid one is refunded)",
                "security": [{"apiToken": []}],
                "responses": _responses(
                    _FULL_EXECUTION, 401, 403, 409, 429, 503, conflict="AlreadyEnded"
                ),
            },
        },
        "/v1/public/executions/{executionId}/events": {
            "parameters": [_EXECUTION_ID],
            "get": {
                "operationId": "streamExecutionEvents",
                "summary": "Follow an execution as Server-Sent Events",
                "description": "`execution` events carry the view (as `getExecution` shapes it "
                "for the token), one per change, the first being the current state; the stream "
                "ends with the terminal state, or with a `reconnect` event after its maximum "
                "lifetime.",
                "security": _READERS,
                "parameters": [_CLIENT_TOKEN, _LAST_EVENT_ID],
                "responses": _responses(
                    {
                        "description": "An event stream.",
                        "content": {"text/event-stream": {"schema": _EVENT}},
                    },
                    401,
                    403,
                    429,
                    503,
                ),  # fmt: skip
            },
        },
        "/v1/public/executions/{executionId}/callbacks/{stepId}": {
            "parameters": [_EXECUTION_ID, _path("stepId", "The `wait_for_callback` step's id.")],
            "post": {
                "operationId": "deliverCallback",
                "summary": "Deliver the output of a step waiting for a callback",
                "security": [{"callbackToken": []}],
                "requestBody": {"required": False, "content": {JSON: {"schema": {}}}},
                "responses": _responses(
                    _envelope(_object(["received"], received={"const": True})),
                    400,
                    401,
                    409,
                    413,
                    429,
                    503,
                ),  # fmt: skip
            },
        },
        "/v1/webhooks/payments/{provider}": {
            "parameters": [_path("provider", "The payment provider this API is set up with.")],
            "post": {
                "operationId": "receivePaymentEvent",
                "summary": "A payment provider's signed event",
                "description": "Signed as Stripe signs (`Stripe-Signature`). 2xx only once the "
                "execution took the event in; a provider's retry is answered the same.",
                "security": [],
                "parameters": [
                    {
                        "name": "Stripe-Signature",
                        "in": "header",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": {"type": "object"}}},
                },
                "responses": _responses(
                    _envelope(
                        _object(
                            ["received", "outcome"],
                            received={"const": True},
                            outcome={"type": "string"},
                        )  # fmt: skip
                    ),
                    400,
                    413,
                    429,
                    503,
                ),  # fmt: skip
            },
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "The process answers",
                "security": [],
                "responses": {
                    "200": {"description": "OK", "content": {"text/plain": {"schema": {}}}}
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "The database and Temporal answer",
                "security": [],
                "responses": {
                    code: {
                        "description": text,
                        "content": {JSON: {"schema": {"type": "object"}}},
                    }
                    for code, text in (("200", "Ready"), ("503", "Not ready: names what is down"))
                },
            }
        },
    }


@cache
def openapi_document() -> dict[str, Any]:
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "Tollway",
            "version": "1",
            "description": "Run an organization's published workflows, optionally for a "
            "price: create an execution session, let the payer pay, follow it to the end. "
            "Every answer is an envelope `{code, data, message, requestId}`; errors add "
            "`error` (the reason) and `errors` (each bad field).",
        },
        "paths": _paths(),
        "components": _components(),
    }
    return document
