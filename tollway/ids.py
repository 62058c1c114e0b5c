"""Identifiers: random prefixed ids for rows, derived ids for executions."""

from __future__ import annotations

import base64
import hashlib
import secrets


def new_id(prefix: str) -> str:
    """A random, URL-safe id such as ``org_3kq7...`` (Stripe-style prefixes)."""
    return f"{prefix}_{base64.b32encode(secrets.token_bytes(10)).decode().lower()}"


def execution_id(organization_id: str, workflow_id: str, idempotency_key: str) -> str:
    """The Temporal workflow ID for an execution: a pure function of its scope and key.

    The key is hashed so neither it nor any personal data it might carry shows in the
    Temporal UI or logs; the caller's organization is part of the hash, so two callers
    never share an execution even with the same key.
    """
    material = "\x1f".join((organization_id, workflow_id, idempotency_key)).encode()
    digest = hashlib.sha256(material).digest()[:20]
    return "exe_" + base64.b32encode(digest).decode().lower()
