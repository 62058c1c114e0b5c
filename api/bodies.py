"""Reading and validating the create body: size cap, JSON, object, fields (strict types)."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError
from starlette.requests import Request

from api.errors import ApiError, FieldError, bad_request

MAX_KEY_LENGTH = 255
MAX_JSON_DEPTH = 64  # nesting levels in requestPayload and clientSafeMetadata
# Identifiers never carry control characters (C0, DEL, C1): they end up in Temporal search
# attributes and visibility queries, where some stores refuse them.
CONTROL = r"\x00-\x1f\x7f-\x9f"
NO_CONTROL = rf"^[^{CONTROL}]*$"
Required = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=255, pattern=rf"^[^{CONTROL}]*[^\s{CONTROL}][^{CONTROL}]*$"
    ),
]
Optional255 = Annotated[str, StringConstraints(max_length=255, pattern=NO_CONTROL)]
Key = Annotated[str, StringConstraints(min_length=1, max_length=MAX_KEY_LENGTH, pattern=NO_CONTROL)]


def has_control(value: str) -> bool:
    return any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value)


class CreateExecutionBody(BaseModel):
    """The seed's request body. Unknown fields are refused, types are strict."""

    model_config = ConfigDict(extra="forbid", strict=True)

    sourceSystem: Required
    sourceEntityType: Required
    sourceEntityId: Optional255 | None = None
    externalRef: Optional255 | None = None
    idempotencyKey: Key | None = None
    requestPayload: dict[str, Any] | None = None
    clientSafeMetadata: dict[str, Any] | None = None

    def fingerprint(self) -> str:
        """What makes two creates "the same request" (the key itself excluded)."""
        material = self.model_dump(exclude={"idempotencyKey"})
        canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "is required"
    if kind == "string_pattern_mismatch":
        return "must not be blank or contain control characters"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"must be at most {error['ctx']['max_length']} characters"
    if kind in {"string_type", "dict_type", "model_type"}:
        return {"string_type": "must be a string", "dict_type": "must be a JSON object"}.get(
            kind, "has the wrong type"
        )
    return str(error["msg"])


async def read_limited(request: Request, limit: int) -> bytes:
    too_large = ApiError(413, "payload_too_large", f"Request body exceeds {limit} bytes.")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def json_depth(value: Any, limit: int) -> int:
    """How deeply ``value`` nests (iteratively: no recursion on hostile input), up to limit+1."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth > limit:
                return depth
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def load_json(raw: bytes, what: str = "body") -> Any:
    """Parse a request's JSON, answering 400 naming ``what`` for invalid or absurdly deep
    JSON (the parser would otherwise exhaust the stack: a RecursionError, i.e. a 500)."""
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(
            f"Request {what} is not valid JSON.", [FieldError(what, str(exc))]
        ) from None
    except RecursionError:
        raise bad_request(
            f"Request {what} nests too deeply.",
            [FieldError(what, f"must not nest deeper than {MAX_JSON_DEPTH} levels")],
        ) from None


def parse_create_body(raw: bytes, header_key: str | None) -> tuple[CreateExecutionBody, str | None]:
    """Validate the body; returns it and the idempotency key from body or header (or None)."""
    data = load_json(raw)
    if not isinstance(data, dict):
        raise bad_request(
            "Request body must be a JSON object.", [FieldError("body", "must be a JSON object")]
        )
    try:
        body = CreateExecutionBody.model_validate(data)
    except ValidationError as exc:
        errors = [
            FieldError(".".join(str(p) for p in e["loc"]) or "body", _message(e))
            for e in exc.errors()
        ]
        raise bad_request("Request body is invalid.", errors) from None
    deep = [
        FieldError(name, f"must not nest deeper than {MAX_JSON_DEPTH} levels")
        for name in ("requestPayload", "clientSafeMetadata")
        if json_depth(data.get(name), MAX_JSON_DEPTH) > MAX_JSON_DEPTH
    ]
    if deep:
        raise bad_request("Request body nests too deeply.", deep)
    if header_key is not None:
        if not 1 <= len(header_key) <= MAX_KEY_LENGTH or has_control(header_key):
            raise bad_request(
                "Idempotency-Key header is invalid.",
                [
                    FieldError(
                        "Idempotency-Key",
                        f"must be 1 to {MAX_KEY_LENGTH} characters, no control characters",
                    )
                ],
            )
        if body.idempotencyKey is not None and body.idempotencyKey != header_key:
            raise bad_request(
                "Idempotency key given twice with different values.",
                [FieldError("idempotencyKey", "differs from the Idempotency-Key header")],
            )
    return body, body.idempotencyKey or header_key
