"""The Temporal codec endpoint, for operators reading payloads in the Temporal UI.

``POST /codec/decode`` and ``/codec/encode`` speak the codec server protocol the Temporal UI
and CLI use (``{"payloads": [{"metadata": {...}, "data": "..."}]}``, protobuf JSON). Only an
operator may call them: an API token with the ``codec`` scope, as a Bearer header, or the
session cookie ``/codec/login`` sets for the UI in a browser (enable "include cross-origin
credentials" in the UI's codec settings). CORS admits only the UI's origins
(``TOLLWAY_CODEC_CORS_ORIGINS``).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from html import escape
from urllib.parse import parse_qs

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from temporalio.api.common.v1 import Payloads

from api.access import deps_of
from api.auth import Principal, bearer_token
from api.bodies import read_limited
from api.deps import Deps
from api.errors import ApiError, FieldError, bad_request, error_response, forbidden, unauthorized
from tollway.codec import CodecError, codec_for

SCOPE = "codec"
COOKIE = "tollway_codec"
SESSION_SECONDS = 8 * 3600
MAX_BODY = 4 * 1024 * 1024
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def _cors(request: Request) -> dict[str, str]:
    origin = request.headers.get("origin", "")
    allowed = {
        o.strip().rstrip("/") for o in deps_of(request).settings.codec_cors_origins.split(",")
    }
    if origin.rstrip("/") not in allowed:
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Namespace",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }


def _session_key(deps: Deps) -> bytes:
    return hmac.new(deps.client_token_secret.encode(), b"tollway codec session", "sha256").digest()


def _session(deps: Deps, token_id: str, expires: int) -> str:
    mac = hmac.new(_session_key(deps), f"{token_id}.{expires}".encode(), hashlib.sha256)
    return f"{token_id}.{expires}.{mac.hexdigest()}"


def _session_token_id(deps: Deps, cookie: str | None) -> str | None:
    token_id, _, rest = (cookie or "").partition(".")
    expires, _, mac = rest.partition(".")
    if not (token_id and expires.isdigit() and mac):
        return None
    expected = _session(deps, token_id, int(expires)).rpartition(".")[2]
    if not hmac.compare_digest(mac, expected) or int(expires) < time.time():
        return None
    return token_id


async def _operator(request: Request) -> str:
    deps = deps_of(request)
    if bearer_token(request) is not None:
        principal: Principal = await deps.tokens.require(request)
        if SCOPE not in principal.scopes:
            raise forbidden("This API token lacks the 'codec' scope.")
        return principal.token_id
    token_id = _session_token_id(deps, request.cookies.get(COOKIE))
    if token_id is None or not await deps.tokens.active(token_id, SCOPE):
        raise unauthorized("An operator token with the 'codec' scope is required.")
    return token_id


async def _limit(request: Request) -> None:
    deps = deps_of(request)
    await deps.limit_address(request, deps.settings.codec_rate_limit, "codec")


async def codec(request: Request) -> Response:
    cors = _cors(request)
    if request.method == "OPTIONS":
        return Response(status_code=204 if cors else 403, headers=cors)
    try:
        await _limit(request)
        await _operator(request)
        raw = await read_limited(request, MAX_BODY)
        try:
            payloads = json_format.Parse(raw, Payloads())
        except (json_format.ParseError, DecodeError, UnicodeDecodeError) as exc:
            raise bad_request(
                "Body is not a payloads object.", [FieldError("payloads", str(exc))]
            ) from None
        deps = deps_of(request)
        keys = deps.settings.payload_keys
        if keys is None:
            raise ApiError(503, "codec_unavailable", "No payload keys are configured.")
        codec_ = codec_for(keys.get_secret_value())
        try:
            if request.path_params["action"] == "decode":
                out = await codec_.decode(payloads.payloads)
            else:
                out = await codec_.encode(payloads.payloads)
        except CodecError as exc:
            raise bad_request(
                "A payload could not be decoded.", [FieldError("payloads", str(exc))]
            ) from None
    except ApiError as exc:
        return error_response(exc, cors)
    body = json_format.MessageToJson(Payloads(payloads=out))
    return Response(body, media_type="application/json", headers=cors)


def _page(body: str, status: int = 200) -> HTMLResponse:
    html = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Tollway codec</title>"
        "<style>body{font-family:system-ui;max-width:30rem;margin:3rem auto}</style>"
        f"<h1>Tollway codec</h1>{body}</html>"
    )
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


async def login(request: Request) -> Response:
    """A browser session for the Temporal UI: paste an operator token once."""
    deps = deps_of(request)
    form = (
        "<form method=post><label>Operator token <input name=token type=password></label> "
        "<button>Sign in</button></form>"
    )
    try:
        await _limit(request)
    except ApiError as exc:
        page = _page(f"<p>{escape(exc.message)}</p>", 429)
        page.headers.update(exc.headers)
        return page
    if request.method == "GET":
        return _page(f"<p>Sign in to read payloads in the Temporal UI.</p>{form}")
    raw = await read_limited(request, 4096)
    token = (parse_qs(raw.decode("latin-1")).get("token") or [""])[0]
    principal = await deps.tokens.resolve(token) if token else None
    if principal is None or SCOPE not in principal.scopes:
        return _page(
            f"<p>{escape('That is not an operator token with the codec scope.')}</p>{form}", 403
        )
    expires = int(time.time()) + SESSION_SECONDS
    response = RedirectResponse("/codec/login?ok=1", status_code=303)
    response.set_cookie(
        COOKIE,
        _session(deps, principal.token_id, expires),
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="strict",
        path="/codec",
        secure=deps.settings.public_base_url.startswith("https://"),
    )
    return response


def routes() -> list[BaseRoute]:
    return [
        Route("/codec/login", login, methods=["GET", "POST"]),
        Route("/codec/{action:str}", codec, methods=["POST", "OPTIONS"]),
    ]
