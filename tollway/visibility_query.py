"""Literals for Temporal visibility queries (list filters), written in one place."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def quoted(value: str) -> str:
    """A string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quoted_instant(value: datetime) -> str:
    """A timestamp literal (``StartTime < '2026-12-01T10:00:00.123456Z'``)."""
    return quoted(rfc3339(value))
