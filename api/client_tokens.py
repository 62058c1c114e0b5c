"""Client tokens: short-lived, HMAC-signed, read-only access to one execution.

Format ``ct_<base64url(json payload)>.<base64url(HMAC-SHA256)>``; the payload names the
execution and the expiry. Signatures are compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from functools import lru_cache

PREFIX = "ct_"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@lru_cache(maxsize=8)
def _keyed(secret: str) -> hmac.HMAC:
    """The HMAC with the key set up, copied for each signature: setting a key up again for
    every token (and every verification) costs more than the signature itself."""
    return hmac.new(secret.encode(), digestmod=hashlib.sha256)


def _sign(secret: str, body: str) -> str:
    mac = _keyed(secret).copy()
    mac.update(body.encode())
    return _b64(mac.digest())


def issue(secret: str, execution_id: str, ttl_seconds: int, now: float | None = None) -> str:
    issued = int(now if now is not None else time.time())
    # "n" makes every token distinct, so a replayed create really hands out a fresh one.
    # The payload is {"e": execution_id, "x": expiry, "n": nonce} as compact JSON, written
    # directly (json.dumps of the dict costs more than the rest of the token).
    nonce = _b64(secrets.token_bytes(6))
    payload = f'{{"e":{json.dumps(execution_id)},"x":{issued + ttl_seconds},"n":"{nonce}"}}'
    body = _b64(payload.encode())
    return f"{PREFIX}{body}.{_sign(secret, body)}"


def verify(secret: str, token: str, now: float | None = None) -> str | None:
    """The execution id the token opens, or None if it is forged, malformed or expired."""
    if not token.startswith(PREFIX):
        return None
    body, _, signature = token[len(PREFIX) :].partition(".")
    if not body or not signature:
        return None
    if not hmac.compare_digest(_sign(secret, body), signature):
        return None
    try:
        payload = json.loads(_unb64(body))
        execution_id, expires = str(payload["e"]), int(payload["x"])
    except (ValueError, KeyError, TypeError):
        return None
    if expires <= (now if now is not None else time.time()):
        return None
    return execution_id
