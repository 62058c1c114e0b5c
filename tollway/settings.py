"""Typed configuration, read once per process from ``TOLLWAY_*`` variables.

Workflow code never reads settings: everything a workflow needs travels in its input.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

VAR_DIR = Path("var")
DEV_CLIENT_TOKEN_SECRET = "dev-only-client-token-secret-change-me"  # noqa: S105 - placeholder
DEV_WEBHOOK_SECRET = "whsec_dev_only_change_me"  # noqa: S105 - placeholder


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
    task_queue: str = "tollway-executions"

    public_base_url: str = "http://127.0.0.1:8000"
    client_token_secret: SecretStr = SecretStr(DEV_CLIENT_TOKEN_SECRET)
    client_token_ttl_seconds: int = Field(default=24 * 3600, gt=0)
    # Webhook secrets are comma-separated: during a rotation both old and new verify.
    local_webhook_secret: SecretStr = SecretStr(DEV_WEBHOOK_SECRET)
    payment_provider: Literal["local", "stripe"] = "local"
    stripe_api_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None  # tests point this at a local stand-in

    max_body_bytes: int = Field(default=256 * 1024, gt=0)
    request_deadline_seconds: float = Field(default=10.0, gt=0)
    query_timeout_seconds: float = Field(default=2.0, gt=0)
    default_rate_limit: str = "100/second"
    rate_limit_storage: str = "memory://"
    auth_cache_seconds: float = Field(default=5.0, ge=0)
    http_allow: str = ""  # SSRF guard exceptions: host, host:port or CIDR, comma-separated
    python_activities: str = ""  # name=package.module:function, comma-separated

    # Ports of `tollway dev` (all on 127.0.0.1).
    dev_temporal_port: int = 7233
    dev_ui_port: int = 8233
    dev_api_port: int = 8000

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.env != "dev":
            placeholders = {
                "TOLLWAY_CLIENT_TOKEN_SECRET": (self.client_token_secret, DEV_CLIENT_TOKEN_SECRET),
                "TOLLWAY_LOCAL_WEBHOOK_SECRET": (self.local_webhook_secret, DEV_WEBHOOK_SECRET),
            }
            for name, (value, placeholder) in placeholders.items():
                secret = value.get_secret_value()
                if secret == placeholder or len(secret) < 16:
                    raise ValueError(f"{name} must be set to a real secret outside dev")
        return self


def webhook_secrets(settings: Settings, provider: str) -> list[str]:
    """The secrets that may sign ``provider``'s webhooks (several during a rotation)."""
    value = {"local": settings.local_webhook_secret, "stripe": settings.stripe_webhook_secret}.get(
        provider
    )
    if value is None:
        return []
    return [s.strip() for s in value.get_secret_value().split(",") if s.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
