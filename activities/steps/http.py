"""``http``: one HTTP request; its JSON (or text) response is the step's output.

Failures say whether to retry: connection errors, timeouts, 429 and 5xx are retryable
(Temporal's retry policy backs off); other 4xx, refused addresses, oversize responses and
missing secrets are final. Secrets (``{"secret": "NAME"}``) are the workflow's organization's
(:mod:`tollway.org_secrets`), decrypted at the last moment, sent only to the hosts they are
bound to (checked before connecting; redirects to another origin are refused while one is
set), and appear nowhere else: not in history, logs or output.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio.to_thread
import httpx
from temporalio.exceptions import ApplicationError

from activities.steps import StepEnvironment, register
from activities.steps.expressions import evaluate
from activities.steps.ssrf import AddressRefused, AllowList, GuardedBackend
from tollway.definitions import ExprRef, HttpStep, SecretRef
from tollway.org_secrets import ResolvedSecret, SecretError, host_allowed
from workflows.step_context import TEMPLATE

MAX_REDIRECTS = 5
_TEMPLATE = TEMPLATE


def guarded_client(allow: AllowList) -> httpx.AsyncClient:
    """The worker's one HTTP client for steps: guarded dials, no proxies from the
    environment, a bounded number of redirects (each hop guarded too)."""
    transport = httpx.AsyncHTTPTransport(retries=0)
    transport._pool._network_backend = GuardedBackend(allow)  # noqa: SLF001 - documented seam
    return httpx.AsyncClient(
        transport=transport, trust_env=False, follow_redirects=True, max_redirects=MAX_REDIRECTS
    )


def _render(template: str, context: dict[str, Any]) -> str:
    def value(match: re.Match[str]) -> str:
        result = evaluate(match.group(1), context)
        return result if isinstance(result, str) else json.dumps(result)

    return _TEMPLATE.sub(value, template)


class _Decoder:
    """Decodes ``Content-Encoding`` ourselves, never producing more than asked for: httpx
    would inflate a whole chunk at once, so a small compressed chunk (a "zip bomb") could
    expand far past any cap before it was counted."""

    def __init__(self, encoding: str) -> None:
        self._zlib: zlib._Decompress | None = None
        if encoding in {"gzip", "x-gzip"}:
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._zlib = zlib.decompressobj()
        elif encoding not in {"", "identity"}:
            raise _final(f"unsupported Content-Encoding {encoding!r}", "UnsupportedEncoding")
        self._pending = b""

    def feed(self, chunk: bytes, room: int) -> bytes:
        """Decoded bytes of ``chunk`` (plus what is still buffered), at most ``room`` + 1."""
        if self._zlib is None:
            return chunk
        self._pending += chunk
        out = self._zlib.decompress(self._pending, room + 1)
        self._pending = self._zlib.unconsumed_tail
        return out


async def read_capped(response: httpx.Response, limit: int, url: str) -> bytes:
    """The response body, decoded; refused as soon as either the bytes on the wire or the
    decoded bytes pass ``limit``."""
    decoder = _Decoder(response.headers.get("content-encoding", "").strip().lower())
    data, wire = bytearray(), 0
    too_large = _final(f"response from {url} exceeds {limit} bytes", "ResponseTooLarge")
    async for chunk in response.aiter_raw():
        wire += len(chunk)
        if wire > limit:
            raise too_large
        data += decoder.feed(chunk, limit - len(data))
        if len(data) > limit:
            raise too_large
    return bytes(data)


def _final(message: str, kind: str) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)


def _header_value(
    value: str | ExprRef | SecretRef,
    context: dict[str, Any],
    env: StepEnvironment,
    organization_id: str,
    used: list[ResolvedSecret],
) -> str:
    if isinstance(value, SecretRef):
        if env.secrets is None:
            raise _final("the worker has no secret store (TOLLWAY_SECRETS_KEY)", "MissingSecret")
        try:
            secret = env.secrets.resolve(organization_id, value.secret)
        except SecretError as exc:
            raise _final(str(exc), "MissingSecret") from None
        if secret is None:
            raise _final(
                f"secret {value.secret!r} is not set for this workflow's organization",
                "MissingSecret",
            )
        used.append(secret)
        return secret.value
    if isinstance(value, ExprRef):
        result = evaluate(value.expr, context)
        return result if isinstance(result, str) else json.dumps(result)
    return _render(value, context)


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    port = url.port or {"http": 80, "https": 443}.get(url.scheme, 0)
    return url.scheme, url.host, port


def _check_secret_hosts(url: str, used: list[ResolvedSecret]) -> None:
    """A secret goes only to the hosts it is bound to: checked before any connection."""
    _scheme, host, port = _origin(httpx.URL(url))
    for secret in used:
        if not host_allowed(secret.allow_hosts, host, port):
            raise _final(
                f"secret {secret.name!r} may not be sent to {host}:{port} "
                f"(it is bound to {', '.join(secret.allow_hosts)})",
                "SecretHostRefused",
            )


@dataclass(frozen=True)
class _Prepared:
    url: str
    headers: dict[str, str]
    body: Any
    carries_secret: bool


def _prepare(
    step: HttpStep, context: dict[str, Any], env: StepEnvironment, organization_id: str
) -> _Prepared:
    url = (
        evaluate(step.url.expr, context)
        if isinstance(step.url, ExprRef)
        else _render(step.url, context)
    )
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise _final(f"url must be an http(s) URL, got {str(url)[:200]!r}", "BadURL")
    used: list[ResolvedSecret] = []
    headers = {
        name: _header_value(v, context, env, organization_id, used)
        for name, v in step.headers.items()
    }
    _check_secret_hosts(url, used)
    given = {name.lower() for name in headers}
    if "accept-encoding" not in given:
        headers["Accept-Encoding"] = "identity"
    if "idempotency-key" not in given:
        # The same on every attempt: an upstream can tell a retry after a crash from new work.
        execution = context.get("execution") or {}
        headers["Idempotency-Key"] = f"{execution.get('id', '')}:{step.id}"
    body = evaluate(step.body, context) if step.body is not None else None
    return _Prepared(url, headers, body, carries_secret=bool(used))


async def _send(
    env_http: httpx.AsyncClient, step: HttpStep, prepared: _Prepared, timeout: httpx.Timeout
) -> tuple[httpx.Response, bytes]:
    """Send the request. With a secret header, redirects are followed here, and only within
    the same origin (httpx would carry custom headers to wherever a redirect points)."""
    method, url = step.method, prepared.url
    body = prepared.body
    for _hop in range(MAX_REDIRECTS + 1):
        async with env_http.stream(
            method,
            url,
            headers=prepared.headers,
            timeout=timeout,
            json=body,
            follow_redirects=not prepared.carries_secret,
        ) as response:
            if prepared.carries_secret and response.is_redirect:
                target = response.url.join(response.headers.get("location", ""))
                if _origin(target) != _origin(response.url):
                    raise _final(
                        f"redirect from {response.url} to another origin ({target.host}) "
                        "refused: the request carries a secret",
                        "RedirectRefused",
                    )
                if response.status_code in {301, 302, 303} and method != "HEAD":
                    method, body = "GET", None
                url = str(target)
                continue
            return response, await read_capped(response, step.maxResponseBytes, url)
    raise httpx.TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")


@register("http")
async def run_http(
    step: HttpStep, context: dict[str, Any], env: StepEnvironment, organization_id: str = ""
) -> Any:
    if env.http is None:
        raise _final("the worker has no HTTP client configured", "Misconfigured")
    # Expressions (and secret look-ups) run in a worker thread, off the event loop.
    prepared = await anyio.to_thread.run_sync(_prepare, step, context, env, organization_id)
    url = prepared.url
    timeout = httpx.Timeout(step.timeoutSeconds, connect=min(step.timeoutSeconds, 10.0))
    try:
        response, data = await _send(env.http, step, prepared, timeout)
    except AddressRefused as exc:
        raise _final(f"refused: {exc}", "AddressRefused") from None
    except httpx.TooManyRedirects:
        raise _final(f"too many redirects from {url}", "TooManyRedirects") from None
    except httpx.TimeoutException:
        raise ApplicationError(
            f"{step.method} {url} timed out after {step.timeoutSeconds} s", type="Timeout"
        ) from None
    except httpx.TransportError as exc:
        raise ApplicationError(
            f"{step.method} {url} failed: {type(exc).__name__}", type="ConnectionError"
        ) from None
    status = response.status_code
    if status == 429 or status >= 500:
        retry_after = response.headers.get("retry-after", "")
        delay = timedelta(seconds=min(int(retry_after), 300)) if retry_after.isdigit() else None
        raise ApplicationError(
            f"{step.method} {url} answered {status}", type="HTTPStatus", next_retry_delay=delay
        )
    if status >= 400:
        raise _final(f"{step.method} {url} answered {status}", "HTTPStatus")
    text = bytes(data).decode(response.encoding or "utf-8", errors="replace")
    parsed: Any = text
    if "json" in response.headers.get("content-type", ""):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = text
    return {"status": status, "headers": dict(response.headers), "body": parsed}
