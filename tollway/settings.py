"""Typed configuration, read once per process from ``TOLLWAY_*`` variables.

Workflow code never reads settings: everything a workflow needs travels in its input.

No secret has a built-in value. ``tollway dev`` generates its own once into ``var/`` and
hands them to its children; every other process that needs one refuses to start without it
(:meth:`Settings.require`), naming the variable. ``TOLLWAY_ENV=production`` refuses the
``local`` payment provider, which takes no money.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

VAR_DIR = Path("var")
MIN_SECRET_LENGTH = 16
RATE = re.compile(r"^[1-9][0-9]{0,6}/(second|minute|hour)$")

Process = Literal["api", "worker"]


class SettingsError(Exception):
    """The configuration cannot run this process; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOLLWAY_", extra="ignore")

    env: Literal["dev", "production"] = "dev"
    database_url: str = Field(
        default="sqlite:///var/tollway.db",
        validation_alias=AliasChoices("DATABASE_URL", "TOLLWAY_DATABASE_URL"),
    )
    temporal_address: str = Field(
        default="127.0.0.1:7233",
        validation_alias=AliasChoices("TEMPORAL_ADDRESS", "TOLLWAY_TEMPORAL_ADDRESS"),
    )
    temporal_namespace: str = "default"
    # Compression of the gRPC messages to and from Temporal. The SDK gzips by default, but
    # Tollway's payloads are encrypted, and ciphertext does not compress: a start's input
    # grows under gzip (1 091 to 1 114 bytes), a whole history shrinks by a quarter (8.7 to
    # 6.5 KB), and every message pays for a fresh deflate state (docs/bench.md). "gzip" for
    # a Temporal reached over a slow or metered link.
    temporal_grpc_compression: Literal["none", "gzip"] = "none"
    task_queue: str = "tollway-executions"

    public_base_url: str = "http://127.0.0.1:8000"
    client_token_secret: SecretStr | None = None
    client_token_ttl_seconds: int = Field(default=24 * 3600, gt=0)
    # Webhook secrets are comma-separated: during a rotation both old and new verify.
    local_webhook_secret: SecretStr | None = None
    payment_provider: Literal["local", "stripe"] = "local"
    # Fernet keys for organizations' step secrets (comma-separated: the first encrypts).
    secrets_key: SecretStr | None = None
    # AES-256-GCM keys for Temporal payloads, id:base64 (comma-separated: the first encrypts).
    payload_keys: SecretStr | None = None
    # Origins of the Temporal UI allowed to call the codec endpoint.
    codec_cors_origins: str = "http://127.0.0.1:8233,http://localhost:8233"
    stripe_api_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None  # tests point this at a local stand-in

    max_body_bytes: int = Field(default=256 * 1024, gt=0)
    request_deadline_seconds: float = Field(default=10.0, gt=0)
    query_timeout_seconds: float = Field(default=2.0, gt=0)
    default_rate_limit: str = "100/second"  # per API token unless the token sets its own
    # Rate limits of the routes that take no API token (N/second, N/minute or N/hour).
    client_rate_limit: str = "20/second"  # client-token reads and streams, per execution
    callback_rate_limit: str = "10/second"  # step callbacks, per execution
    checkout_rate_limit: str = "60/minute"  # the local checkout page, per client address
    webhook_rate_limit: str = "100/second"  # payment webhooks, per client address
    codec_rate_limit: str = "600/minute"  # the payload codec and its login, per client address
    # Server-Sent Events: concurrent streams per token and per address, lifetime, keep-alive.
    sse_max_streams_per_token: int = Field(default=5, gt=0)
    sse_max_streams_per_address: int = Field(default=20, gt=0)
    sse_max_seconds: float = Field(default=300.0, gt=0)
    sse_keepalive_seconds: float = Field(default=15.0, gt=0)
    rate_limit_storage: str = "memory://"
    auth_cache_seconds: float = Field(default=5.0, ge=0)
    # While the database is down, tokens and workflows verified this recently keep working.
    auth_stale_seconds: float = Field(default=300.0, ge=0)
    http_allow: str = ""  # SSRF guard exceptions: host, host:port or CIDR, comma-separated
    python_activities: str = ""  # name=package.module:function, comma-separated

    # The worker's /metrics, /healthz and /readyz (0 turns them off).
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field(default=9464, ge=0, le=65535)
    # Status webhooks: the first retry's delay (then doubling, up to an hour, for 26 hours).
    webhook_retry_initial_seconds: float = Field(default=5.0, gt=0)
    # SIGTERM: how long running activities may take to finish before they are cancelled.
    worker_drain_seconds: float = Field(default=30.0, ge=0)

    # Ports of `tollway dev` (all on 127.0.0.1).
    dev_temporal_port: int = 7233
    dev_ui_port: int = 8233
    dev_api_port: int = 8000

    @field_validator(
        "default_rate_limit",
        "client_rate_limit",
        "callback_rate_limit",
        "checkout_rate_limit",
        "webhook_rate_limit",
        "codec_rate_limit",
    )
    @classmethod
    def _rate(cls, value: str) -> str:
        if not RATE.match(value):
            raise ValueError(f"{value!r} must look like N/second, N/minute or N/hour")
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.env == "production" and self.payment_provider == "local":
            raise ValueError(
                "TOLLWAY_PAYMENT_PROVIDER=local takes no money and is refused with "
                "TOLLWAY_ENV=production; set TOLLWAY_PAYMENT_PROVIDER=stripe"
            )
        for name, value in (
            ("TOLLWAY_LOCAL_WEBHOOK_SECRET", self.local_webhook_secret),
            ("TOLLWAY_STRIPE_WEBHOOK_SECRET", self.stripe_webhook_secret),
        ):
            if value is not None:
                _check_secret_list(name, value.get_secret_value())
        if self.payload_keys is not None:
            from tollway.codec import parse_keys

            parse_keys(self.payload_keys.get_secret_value())  # CodecError is a ValueError
        if self.client_token_secret is not None:
            secret = self.client_token_secret.get_secret_value()
            _check_secret_list("TOLLWAY_CLIENT_TOKEN_SECRET", secret)
        return self

    def require(self, process: Process) -> None:
        """Refuse to run ``process`` without the secrets it needs (raises SettingsError)."""
        needed: dict[str, SecretStr | None] = {"TOLLWAY_PAYLOAD_KEYS": self.payload_keys}
        if process == "api":
            needed["TOLLWAY_CLIENT_TOKEN_SECRET"] = self.client_token_secret
            if self.payment_provider == "local":
                needed["TOLLWAY_LOCAL_WEBHOOK_SECRET"] = self.local_webhook_secret
        if self.payment_provider == "stripe":
            needed["TOLLWAY_STRIPE_API_KEY"] = self.stripe_api_key
            if process == "api":
                needed["TOLLWAY_STRIPE_WEBHOOK_SECRET"] = self.stripe_webhook_secret
        missing = [name for name, value in needed.items() if value is None]
        if missing:
            raise SettingsError(f"{', '.join(missing)} must be set (no secret has a default)")

    @property
    def stripe_livemode(self) -> bool:
        """Stripe events must match the key's mode: a test-mode event never pays live."""
        key = self.stripe_api_key.get_secret_value() if self.stripe_api_key else ""
        return key.startswith(("sk_live_", "rk_live_"))


def _check_secret_list(name: str, value: str) -> None:
    parts = value.split(",")
    for index, part in enumerate(parts):
        if len(part.strip()) < MIN_SECRET_LENGTH:
            which = f"entry {index + 1} of {name}" if len(parts) > 1 else name
            raise ValueError(f"{which} must be at least {MIN_SECRET_LENGTH} characters")


def webhook_secrets(settings: Settings, provider: str) -> list[str]:
    """The secrets that may sign ``provider``'s webhooks (several during a rotation)."""
    value = {"local": settings.local_webhook_secret, "stripe": settings.stripe_webhook_secret}.get(
        provider
    )
    if value is None:
        return []
    return [s.strip() for s in value.get_secret_value().split(",") if s.strip()]


def secret_value(value: SecretStr | None, name: str) -> str:
    if value is None:
        raise SettingsError(f"{name} must be set (no secret has a default)")
    return value.get_secret_value()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def settings_for(process: Process) -> Settings:
    """This process's settings, or SettingsError with one line naming what is wrong."""
    try:
        settings = get_settings()
    except ValidationError as err:
        first = err.errors()[0]
        where = "_".join(str(p) for p in first["loc"]).upper()
        message = str(first["msg"]).removeprefix("Value error, ")
        raise SettingsError(f"TOLLWAY_{where}: {message}" if where else message) from None
    settings.require(process)
    return settings
