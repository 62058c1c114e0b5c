"""Organization-scoped step secrets bound to hosts: the CLI, encryption at rest, and every way
a definition might try to send a secret somewhere else."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from temporalio.client import Client

from tests.helpers import SECRETS_KEY, Tenant, make_tenant
from tests.history_text import decoded_history
from tests.processes import run_tollway
from tests.servers import serve
from tests.test_steps import http_flow, run
from tollway.tables import OrgSecret

VALUE = "partner-key-for-tests-only-4f9b2c7e"


class Partner:
    """A loopback server recording the Authorization header of every request."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []

    def app(self) -> Starlette:
        async def handle(request: Request) -> Response:
            self.seen.append(request.headers.get("authorization"))
            to = request.query_params.get("to")
            if to:
                return RedirectResponse(to, status_code=302)
            return JSONResponse({"ok": True})

        return Starlette(routes=[Route("/{name}", handle)])


@pytest.fixture(scope="module")
def partners() -> Iterator[tuple[Partner, str, Partner, str]]:
    first, second = Partner(), Partner()
    with serve(first.app()) as a, serve(second.app()) as b:
        yield first, a, second, b


def cli(database_url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return run_tollway(
        "admin",
        "secret",
        *args,
        stdin=stdin,
        env={"DATABASE_URL": database_url, "TOLLWAY_SECRETS_KEY": SECRETS_KEY, "PATH": "/bin"},
    )


def test_cli_reads_the_value_from_stdin_stores_it_encrypted_and_never_prints_it(
    database_url: str, engine: Engine
) -> None:
    tenant = make_tenant(engine)
    stored = cli(
        database_url,
        "set",
        "--org",
        tenant.org_id,
        "PARTNER_KEY",
        "--allow-host",
        "api.partner.example",
        "--allow-host",
        "127.0.0.1:8443",
        "--json",
        stdin=VALUE + "\n",
    )
    assert stored.returncode == 0, stored.stderr
    assert json.loads(stored.stdout) == {
        "name": "PARTNER_KEY",
        "allowHosts": ["127.0.0.1:8443", "api.partner.example"],
    }
    listed = cli(database_url, "list", "--org", tenant.org_id, "--json")
    assert json.loads(listed.stdout) == [
        {
            "organizationId": tenant.org_id,
            "name": "PARTNER_KEY",
            "allowHosts": ["127.0.0.1:8443", "api.partner.example"],
        }
    ]
    for result in (stored, listed, cli(database_url, "list")):
        assert VALUE not in result.stdout + result.stderr
    with Session(engine) as session:
        row = session.get(OrgSecret, (tenant.org_id, "PARTNER_KEY"))
        assert (
            row is not None and VALUE not in row.ciphertext and row.ciphertext.startswith("gAAAA")
        )
    usage = cli(database_url, "set", "--help").stdout
    assert "standard input" in usage and "--value" not in usage  # no way to put it in argv
    no_host = cli(database_url, "set", "--org", tenant.org_id, "X", stdin=VALUE)
    assert no_host.returncode == 2 and "--allow-host" in no_host.stderr
    bad_host = cli(
        database_url, "set", "--org", tenant.org_id, "X", "--allow-host", "a b", stdin=VALUE
    )
    assert bad_host.returncode == 2 and VALUE not in bad_host.stderr
    gone = cli(database_url, "delete", "--org", tenant.org_id, "PARTNER_KEY", "--json")
    assert json.loads(gone.stdout) == {"name": "PARTNER_KEY", "deleted": True}
    assert json.loads(cli(database_url, "list", "--org", tenant.org_id, "--json").stdout) == []


async def test_secret_goes_to_its_host_and_nowhere_in_history_or_logs(
    http: httpx.AsyncClient,
    client: Client,
    tenant: Tenant,
    partners: tuple[Partner, str, Partner, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, a, _, _ = partners
    tenant.secret("PARTNER_KEY", VALUE, "127.0.0.1")
    caplog.set_level(logging.DEBUG)
    flow = http_flow(f"{a}/ok", headers={"Authorization": {"secret": "PARTNER_KEY"}})
    done = await run(http, tenant, flow, "workflow_succeeded")
    assert first.seen[-1] == VALUE
    history = await decoded_history(client, done["id"])
    assert "PARTNER_KEY" in history and VALUE not in history
    assert VALUE not in caplog.text and VALUE not in json.dumps(done)


async def test_another_organizations_secret_is_not_there(
    http: httpx.AsyncClient, tenant: Tenant, partners: tuple[Partner, str, Partner, str]
) -> None:
    first, a, _, _ = partners
    tenant.secret("PARTNER_KEY", VALUE, "127.0.0.1")
    other = make_tenant(tenant.engine)  # publishes a flow naming the same secret
    before = len(first.seen)
    flow = http_flow(f"{a}/ok", headers={"Authorization": {"secret": "PARTNER_KEY"}})
    done = await run(http, other, flow, "workflow_failed")
    assert "not set for this workflow's organization" in done["statusReason"]
    assert len(first.seen) == before


@pytest.mark.parametrize("bound_to", ["partner.example", "127.0.0.1:1", "127.0.0.2"])
async def test_secret_bound_elsewhere_fails_before_any_connection(
    http: httpx.AsyncClient,
    tenant: Tenant,
    partners: tuple[Partner, str, Partner, str],
    bound_to: str,
) -> None:
    first, a, _, _ = partners
    tenant.secret("PARTNER_KEY", VALUE, bound_to)
    before = len(first.seen)
    # The URL comes from the caller's payload: exactly what a hostile caller would do.
    flow = http_flow("{{ request.target }}", headers={"Authorization": {"secret": "PARTNER_KEY"}})
    done = await run(http, tenant, flow, "workflow_failed", requestPayload={"target": a + "/x"})
    assert "may not be sent to 127.0.0.1" in done["statusReason"], done["statusReason"]
    assert len(first.seen) == before


async def test_no_redirect_carries_a_secret_to_another_origin(
    http: httpx.AsyncClient, tenant: Tenant, partners: tuple[Partner, str, Partner, str]
) -> None:
    first, a, second, b = partners
    tenant.secret("PARTNER_KEY", VALUE, "127.0.0.1")  # both servers' host: still two origins
    before_second = len(second.seen)
    flow = http_flow(
        f"{a}/start?to={b}/steal", headers={"Authorization": {"secret": "PARTNER_KEY"}}
    )
    done = await run(http, tenant, flow, "workflow_failed")
    assert "to another origin" in done["statusReason"] and "refused" in done["statusReason"]
    assert first.seen[-1] == VALUE
    assert len(second.seen) == before_second  # the second server received nothing at all
    same_origin = http_flow(
        f"{a}/start?to=/final", headers={"Authorization": {"secret": "PARTNER_KEY"}}
    )
    followed = await run(http, tenant, same_origin, "workflow_succeeded")
    assert followed["responsePayload"]["body"] == {"ok": True}
    assert first.seen[-2:] == [VALUE, VALUE]
