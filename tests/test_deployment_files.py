"""The compose file is checked by parsing (no engine here): services, commands and settings
line up with the code."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
import yaml

from api.ratelimit import RateLimiter
from tollway.settings import Settings
from workflows import search_attributes as sa


def load(repo_root: Path) -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((repo_root / "docker-compose.yml").read_text())


def test_compose_runs_api_and_worker_through_the_cli(repo_root: Path) -> None:
    compose = load(repo_root)
    services = compose["services"]
    assert {"postgres", "temporal", "temporal-ui", "api", "worker"} <= set(services)
    assert services["api"]["command"][:2] == ["tollway", "api"]
    assert services["worker"]["command"] == ["tollway", "worker"]
    assert (repo_root / "Dockerfile").exists()


def test_compose_environment_names_real_settings(repo_root: Path) -> None:
    env = load(repo_root)["services"]["api"]["environment"]
    known = {f"TOLLWAY_{name.upper()}" for name in Settings.model_fields}
    known |= {"DATABASE_URL", "TEMPORAL_ADDRESS"}
    assert set(env) <= known, set(env) - known
    assert env["TOLLWAY_ENV"] == "production"
    for secret in (
        "TOLLWAY_CLIENT_TOKEN_SECRET",
        "TOLLWAY_STRIPE_API_KEY",
        "TOLLWAY_STRIPE_WEBHOOK_SECRET",
    ):
        assert re.fullmatch(r"\$\{\w+:\?.+\}", env[secret]), "secret must be required"


def test_compose_registers_every_search_attribute(repo_root: Path) -> None:
    script = " ".join(load(repo_root)["services"]["temporal-search-attributes"]["command"])
    assert {key.name for key in sa.ALL} <= set(re.findall(r"Tollway\w+", script))


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="TOLLWAY_CLIENT_TOKEN_SECRET"):
        Settings.model_validate({"client_token_secret": "short"})


async def test_rate_limits_work_on_redis_storage() -> None:
    limiter = RateLimiter("redis://127.0.0.1:6379/15")
    token = f"tok_{uuid.uuid4().hex}"
    assert (await limiter.hit(token, "2/minute"))["RateLimit-Remaining"] == "1"
    await limiter.hit(token, "2/minute")
    with pytest.raises(Exception, match="Rate limit"):
        await limiter.hit(token, "2/minute")
