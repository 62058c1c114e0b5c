"""Organization-scoped secrets, bound to the hosts they may be sent to.

A definition's ``{"secret": "NAME"}`` resolves only within the workflow's own organization,
and only for a request to one of the hosts the secret was stored with: a public workflow
whose URL is built from the caller's payload cannot send its owner's key anywhere else.

Values are encrypted at rest with Fernet (AES-128-CBC + HMAC-SHA256) under
``TOLLWAY_SECRETS_KEY`` (comma-separated keys: the first encrypts, all decrypt, so keys can
rotate). Operators set them with ``tollway admin secret set`` (the value is read from
standard input, never from the command line); nothing ever prints or logs a value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from tollway.tables import OrgSecret, utcnow

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
HOST = re.compile(
    r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
)
MAX_VALUE_BYTES = 8 * 1024


class SecretError(ValueError):
    """A secret cannot be stored or used as asked; the message says why (never the value)."""


def cipher(keys: str) -> MultiFernet:
    parts = [k.strip() for k in keys.split(",") if k.strip()]
    if not parts:
        raise SecretError("TOLLWAY_SECRETS_KEY must be set to store or use step secrets")
    try:
        return MultiFernet([Fernet(k.encode()) for k in parts])
    except ValueError:
        raise SecretError(
            "TOLLWAY_SECRETS_KEY must be Fernet keys (32 url-safe base64-encoded bytes each)"
        ) from None


def new_key() -> str:
    return Fernet.generate_key().decode()


def parse_host(entry: str) -> str:
    """``host`` or ``host:port``, lower-cased; IPv6 literals as ``[::1]:port``."""
    value = entry.strip().lower()
    host, port = value, ""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        host, port = f"[{host}]", rest.removeprefix(":")
    elif value.count(":") == 1:
        host, port = value.split(":")
    bare = host.strip("[]")
    if not (HOST.match(bare) or _is_ip(bare)) or (port and not port.isdigit()):
        raise SecretError(f"--allow-host {entry!r} must be HOST or HOST:PORT")
    return f"{host}:{int(port)}" if port else host


def _is_ip(value: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def host_allowed(allow_hosts: list[str], host: str, port: int) -> bool:
    """Whether a request to ``host:port`` may carry a secret bound to ``allow_hosts``; an
    entry without a port allows any port of that host."""
    host = host.lower()
    shown = f"[{host}]" if ":" in host else host
    return shown in allow_hosts or f"{shown}:{port}" in allow_hosts


@dataclass(frozen=True)
class ResolvedSecret:
    name: str
    value: str
    allow_hosts: list[str]


class SecretStore:
    def __init__(self, engine: Engine, keys: str) -> None:
        self._engine = engine
        self._keys = keys

    def set(self, organization_id: str, name: str, value: str, allow_hosts: list[str]) -> None:
        if not NAME.match(name):
            raise SecretError(f"secret name {name!r} must be letters, digits and _ (max 64)")
        if not value:
            raise SecretError("the secret's value (read from standard input) is empty")
        if len(value.encode()) > MAX_VALUE_BYTES:
            raise SecretError(f"the secret's value is over {MAX_VALUE_BYTES} bytes")
        hosts = sorted({parse_host(h) for h in allow_hosts})
        if not hosts:
            raise SecretError("a secret needs at least one --allow-host")
        token = cipher(self._keys).encrypt(value.encode()).decode()
        with Session(self._engine) as session:
            row = session.get(OrgSecret, (organization_id, name))
            if row is None:
                row = OrgSecret(organization_id=organization_id, name=name, ciphertext=token)
            row.ciphertext, row.allow_hosts, row.updated_at = token, hosts, utcnow()
            session.add(row)
            session.commit()

    def list(self, organization_id: str | None = None) -> list[OrgSecret]:
        with Session(self._engine) as session:
            query = select(OrgSecret).order_by(col(OrgSecret.organization_id), col(OrgSecret.name))
            if organization_id:
                query = query.where(OrgSecret.organization_id == organization_id)
            return list(session.exec(query))

    def delete(self, organization_id: str, name: str) -> bool:
        with Session(self._engine) as session:
            row = session.get(OrgSecret, (organization_id, name))
            if row is None:
                return False
            session.delete(row)
            session.commit()
            return True

    def resolve(self, organization_id: str, name: str) -> ResolvedSecret | None:
        """The secret ``name`` of this organization (None: it has none by that name)."""
        with Session(self._engine) as session:
            row = session.get(OrgSecret, (organization_id, name))
        if row is None:
            return None
        try:
            value = cipher(self._keys).decrypt(row.ciphertext.encode()).decode()
        except InvalidToken:
            raise SecretError(
                f"secret {name!r} cannot be decrypted with TOLLWAY_SECRETS_KEY"
            ) from None
        return ResolvedSecret(name, value, list(row.allow_hosts))
