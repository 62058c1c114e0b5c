"""Why the execution workflow refuses an update: the ``type`` of the ApplicationError its
validators and handlers raise, and the one name the API matches on (``api.routes`` maps each
to an HTTP answer)."""

from __future__ import annotations

from enum import StrEnum


class Refusal(StrEnum):
    IDEMPOTENCY_KEY_REUSED = "IdempotencyKeyReused"
    UNKNOWN_CALLBACK = "UnknownCallback"
    BAD_CALLBACK_TOKEN = "BadCallbackToken"
    CALLBACK_CLOSED = "CallbackClosed"
    ALREADY_TERMINAL = "AlreadyTerminal"
