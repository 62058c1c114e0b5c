"""Opaque, signed list cursors.

A cursor wraps Temporal's page token together with the query it belongs to (organization,
workflow, filters) under an HMAC, so a tampered cursor, or one replayed with other filters or
by another organization, is refused with a 400 before it reaches Temporal. Signatures are
compared in constant time; the key is derived from the client-token secret for this one use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json


class BadCursor(Exception):
    """Not a cursor this API issued for this query."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scope(organization_id: str, workflow_id: str, filters: dict[str, str]) -> str:
    return json.dumps(
        [organization_id, workflow_id, sorted(filters.items())], separators=(",", ":")
    )


class CursorSigner:
    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode(), b"tollway list cursor v1", hashlib.sha256).digest()

    def _mac(self, token: bytes, scope: str) -> bytes:
        return hmac.new(self._key, token + b"\x00" + scope.encode(), hashlib.sha256).digest()

    def issue(
        self, token: bytes, organization_id: str, workflow_id: str, filters: dict[str, str]
    ) -> str:
        mac = self._mac(token, _scope(organization_id, workflow_id, filters))
        return f"{_b64(token)}.{_b64(mac)}"

    def open(
        self, cursor: str, organization_id: str, workflow_id: str, filters: dict[str, str]
    ) -> bytes:
        token_text, _, mac_text = cursor.partition(".")
        try:
            token, mac = _unb64(token_text), _unb64(mac_text)
        except ValueError:
            raise BadCursor from None
        expected = self._mac(token, _scope(organization_id, workflow_id, filters))
        if not token or not hmac.compare_digest(mac, expected):
            raise BadCursor
        return token
