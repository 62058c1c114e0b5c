"""``http``: one HTTP request; its JSON (or text) response is the step's output.

Failures say whether to retry: connection errors, timeouts, 429 and 5xx are retryable
(Temporal's retry policy backs off); other 4xx, refused addresses, oversize responses and
missing secrets are final. Secrets (``{"secret": "NAME"}``) are read from the worker's
environment at the last moment and appear nowhere else: not in history, logs or output.
"""

from __future__ import annotations

import json
import re
import zlib
from datetime import timedelta
from typing import Any

import anyio.to_thread
import httpx
from temporalio.exceptions import ApplicationError

from activities.steps import StepEnvironment, register
from activities.steps.expressions import evaluate
from activities.steps.ssrf import AddressRefused, AllowList, GuardedBackend
from tollway.definitions import ExprRef, HttpStep, SecretRef

_TEMPLATE = re.compile(r"\{\{\s*(.+?)\s*\}\}")


def guarded_client(allow: AllowList) -> httpx.AsyncClient:
    """The worker's one HTTP client for steps: guarded dials, no proxies from the
    environment, a bounded number of redirects (each hop guarded too)."""
    transport = httpx.AsyncHTTPTransport(retries=0)
    transport._pool._network_backend = GuardedBackend(allow)  # noqa: SLF001 - documented seam
    return httpx.AsyncClient(
        transport=transport, trust_env=False, follow_redirects=True, max_redirects=5
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
    value: str | ExprRef | SecretRef, context: dict[str, Any], env: StepEnvironment
) -> str:
    if isinstance(value, SecretRef):
        secret = env.secrets.get(value.secret)
        if secret is None:
            raise _final(f"secret {value.secret!r} is not set on the worker", "MissingSecret")
        return secret
    if isinstance(value, ExprRef):
        result = evaluate(value.expr, context)
        return result if isinstance(result, str) else json.dumps(result)
    return _render(value, context)


def _prepare(
    step: HttpStep, context: dict[str, Any], env: StepEnvironment
) -> tuple[str, dict[str, str], Any]:
    url = (
        evaluate(step.url.expr, context)
        if isinstance(step.url, ExprRef)
        else _render(step.url, context)
    )
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise _final(f"url must be an http(s) URL, got {str(url)[:200]!r}", "BadURL")
    headers = {name: _header_value(v, context, env) for name, v in step.headers.items()}
    given = {name.lower() for name in headers}
    if "accept-encoding" not in given:
        headers["Accept-Encoding"] = "identity"
    if "idempotency-key" not in given:
        # The same on every attempt: an upstream can tell a retry after a crash from new work.
        execution = context.get("execution") or {}
        headers["Idempotency-Key"] = f"{execution.get('id', '')}:{step.id}"
    body = evaluate(step.body, context) if step.body is not None else None
    return url, headers, body


@register("http")
async def run_http(step: HttpStep, context: dict[str, Any], env: StepEnvironment) -> Any:
    if env.http is None:
        raise _final("the worker has no HTTP client configured", "Misconfigured")
    # Expressions are evaluated in a worker thread (within their budget), off the event loop.
    url, headers, body = await anyio.to_thread.run_sync(_prepare, step, context, env)
    timeout = httpx.Timeout(step.timeoutSeconds, connect=min(step.timeoutSeconds, 10.0))
    try:
        async with env.http.stream(
            step.method,
            url,
            headers=headers,
            timeout=timeout,
            json=body if step.body is not None else None,
        ) as response:
            data = await read_capped(response, step.maxResponseBytes, url)
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
