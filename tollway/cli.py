"""The ``tollway`` command: ``dev``, ``api``, ``worker``, ``migrate`` and ``admin``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlmodel import Session
from temporalio.service import RPCError, RPCStatusCode

from tollway import admin
from tollway.db import make_engine
from tollway.definition_files import load_definition_file
from tollway.definitions import DefinitionError, WorkflowDefinition
from tollway.migrate import SchemaNotCurrent, migrate, require_current
from tollway.org_secrets import SecretError
from tollway.outage import DATABASE_DOWN
from tollway.settings import SettingsError, get_settings, settings_for
from tollway.settle import SettleError
from tollway.status_webhooks import WebhookError
from tollway.tables import Organization
from tollway.temporal import TemporalUnreachable


def _out(value: Any, as_json: bool, text: str) -> None:
    sys.stdout.write((json.dumps(value, default=str) if as_json else text) + "\n")


def _engine() -> Any:
    engine = make_engine(get_settings().database_url)
    require_current(engine)
    return engine


def _migrate(args: argparse.Namespace) -> int:
    engine = make_engine(get_settings().database_url)
    try:
        done = migrate(engine)
    finally:
        engine.dispose()
    if done.before == done.after:
        text = f"database already at revision {done.after}"
    else:
        made = " (tables of an earlier release adopted)" if done.adopted else ""
        text = f"database migrated from {done.before or 'empty'} to {done.after}{made}"
    _out({"before": done.before, "after": done.after, "adopted": done.adopted}, args.json, text)
    return 0


def _admin(args: argparse.Namespace) -> int:
    engine = _engine()
    rows: list[dict[str, Any]]
    what, action = args.what, getattr(args, "action", None)
    if what == "org" and action == "create":
        org = admin.create_organization(engine, args.name)
        _out({"id": org.id}, args.json, f"created organization {org.id} ({org.name})")
    elif what == "org" and action == "list":
        orgs = admin.list_organizations(engine)
        rows = [{"id": o.id, "name": o.name, "createdAt": o.created_at.isoformat()} for o in orgs]
        _out(rows, args.json, "\n".join(f"{r['id']}  {r['name']}" for r in rows) or "(none)")
    elif what == "token" and action == "create":
        scopes = tuple(args.scope) if args.scope else admin.DEFAULT_SCOPES
        rate = args.rate_limit or get_settings().default_rate_limit
        row, token = admin.create_token(engine, args.org, rate, scopes)
        _out(
            {"id": row.id, "token": token},
            args.json,
            f"created token {row.id} for {row.organization_id} ({rate})\n"
            f"token (shown once, store it now): {token}",
        )
    elif what == "token" and action == "list":
        tokens = admin.list_tokens(engine, args.org)
        rows = [
            {
                "id": t.id,
                "organizationId": t.organization_id,
                "prefix": t.token_prefix,
                "scopes": t.scopes,
                "rateLimit": t.rate_limit,
                "revoked": t.revoked_at is not None,
                "revokedAt": t.revoked_at.isoformat() if t.revoked_at else None,
            }
            for t in tokens
        ]
        text = "\n".join(
            f"{r['id']}  {r['organizationId']}  {r['prefix']}…  {r['rateLimit']}"
            + ("  revoked" if r["revoked"] else "")
            for r in rows
        )
        _out(rows, args.json, text or "(none)")
    elif what == "token" and action == "revoke":
        revoked = admin.revoke_token(engine, args.id)
        assert revoked.revoked_at is not None
        _out(
            {"id": revoked.id, "revokedAt": revoked.revoked_at.isoformat()},
            args.json,
            f"revoked token {revoked.id}",
        )
    elif what == "reconcile":
        return _reconcile(args, engine)
    elif what == "secret":
        return _secret(args, engine)
    elif what == "executions":
        from tollway import cli_executions

        return cli_executions.run(args, engine)
    elif what == "webhook":
        from tollway import cli_webhooks

        return cli_webhooks.run(args, engine)
    elif what == "workflow" and action == "create":
        definition = load_definition_file(Path(args.file))
        wf = admin.create_workflow(engine, args.org, definition)
        _out(
            {"id": wf.id, "version": wf.current_version},
            args.json,
            f"created workflow {wf.id} version {wf.current_version} ({definition.name})",
        )
    elif what == "workflow" and action == "update":
        definition = load_definition_file(Path(args.file))
        version = admin.publish_version(engine, args.id, definition)
        _out(
            {"id": args.id, "version": version},
            args.json,
            f"workflow {args.id} is now at version {version}",
        )
    elif what == "workflow" and action == "list":
        records = admin.list_workflows(engine, args.org)
        rows = [
            {
                "id": r.id,
                "organizationId": r.organization_id,
                "version": r.version,
                "name": r.definition.name,
                "access": r.definition.access,
                "price": r.definition.price.model_dump() if r.definition.price else None,
            }
            for r in records
        ]
        text = "\n".join(f"{r['id']}  v{r['version']}  {r['access']}  {r['name']}" for r in rows)
        _out(rows, args.json, text or "(none)")
    elif what == "workflow" and action == "schema":
        _out(WorkflowDefinition.model_json_schema(), True, "")
    return 0


def _secret(args: argparse.Namespace, engine: Any) -> int:
    from tollway.org_secrets import SecretStore

    settings = get_settings()
    keys = settings.secrets_key.get_secret_value() if settings.secrets_key else ""
    store = SecretStore(engine, keys)
    if args.action == "set":
        with Session(engine) as session:
            if session.get(Organization, args.org) is None:
                raise admin.AdminError(f"organization {args.org!r} does not exist")
        # The value comes from standard input only: never argv (visible to every process
        # on the machine) or the environment. One trailing newline (from echo) is dropped.
        value = sys.stdin.read().removesuffix("\n")
        store.set(args.org, args.name, value, args.allow_host)
        [row] = [r for r in store.list(args.org) if r.name == args.name]
        _out(
            {"name": row.name, "allowHosts": row.allow_hosts},
            args.json,
            f"stored secret {row.name} for {args.org}, sent only to {', '.join(row.allow_hosts)}",
        )
    elif args.action == "list":
        rows = [
            {"organizationId": r.organization_id, "name": r.name, "allowHosts": r.allow_hosts}
            for r in store.list(args.org)
        ]
        text = "\n".join(
            f"{r['organizationId']}  {r['name']}  {', '.join(r['allowHosts'])}" for r in rows
        )
        _out(rows, args.json, text or "(none)")
    elif args.action == "delete":
        if not store.delete(args.org, args.name):
            raise admin.AdminError(f"organization {args.org!r} has no secret {args.name!r}")
        _out({"name": args.name, "deleted": True}, args.json, f"deleted secret {args.name}")
    return 0


def _reconcile(args: argparse.Namespace, engine: Any) -> int:
    import asyncio
    from datetime import timedelta

    from tollway.reconcile import LocalBook, ProviderBook, Reconciler, StripeBook
    from tollway.temporal import connect

    settings = get_settings()
    book: ProviderBook
    if settings.payment_provider == "stripe":
        from activities.stripe_provider import stripe_client

        book = StripeBook(stripe_client(settings))
    else:
        book = LocalBook(engine)

    async def run() -> Any:
        client = await connect(settings)
        reconciler = Reconciler(
            engine, client, book, timedelta(minutes=args.refund_threshold_minutes)
        )
        return await reconciler.run(timedelta(hours=args.since_hours))

    report = asyncio.run(run())
    lines = [
        f"{d.kind}  {d.executionId}  {d.detail}"
        + (f"  ({d.paymentReference})" if d.paymentReference else "")
        for d in report.discrepancies
    ]
    summary = f"checked {report.checked}: {len(report.discrepancies)} discrepancies"
    _out(report.as_dict(), args.json, "\n".join([*lines, summary]))
    return 1 if report.discrepancies else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tollway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dev", help="run Temporal, the worker and the API with embedded defaults")
    api = sub.add_parser("api", help="run the HTTP API under uvicorn")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    sub.add_parser("worker", help="run the Temporal worker")
    sub.add_parser(
        "migrate",
        help="bring the database to this release's schema (safe to run twice or concurrently)",
    ).add_argument("--json", action="store_true", help="print JSON")

    adm = sub.add_parser("admin", help="manage organizations, tokens and workflows")
    what = adm.add_subparsers(dest="what", required=True)

    def action(group: Any, name: str, help_: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = group.add_parser(name, help=help_, description=help_)
        p.add_argument("--json", action="store_true", help="print JSON")
        return p

    org = what.add_parser("org").add_subparsers(dest="action", required=True)
    action(org, "create", "create an organization").add_argument("name")
    action(org, "list", "list organizations")

    tok = what.add_parser("token").add_subparsers(dest="action", required=True)
    create = action(tok, "create", "create an API token (shown once)")
    create.add_argument("--org", required=True)
    create.add_argument("--rate-limit", help="N/second, N/minute or N/hour")
    create.add_argument("--scope", action="append", choices=sorted(admin.KNOWN_SCOPES))
    action(tok, "list", "list API tokens").add_argument("--org")
    action(
        tok,
        "revoke",
        "revoke an API token; APIs refuse it within their auth cache time "
        "(TOLLWAY_AUTH_CACHE_SECONDS, 5 s by default)",
    ).add_argument("id")

    sec = what.add_parser("secret").add_subparsers(dest="action", required=True)
    put = action(
        sec,
        "set",
        "store an organization's step secret; its value is read from standard input",
    )
    put.add_argument("--org", required=True)
    put.add_argument("name")
    put.add_argument(
        "--allow-host",
        action="append",
        required=True,
        metavar="HOST[:PORT]",
        help="a host the secret may be sent to (repeat for several)",
    )
    action(sec, "list", "list secrets: names and hosts, never values").add_argument("--org")
    drop = action(sec, "delete", "delete a secret")
    drop.add_argument("--org", required=True)
    drop.add_argument("name")

    from tollway import cli_executions

    cli_executions.add_parsers(what, action)
    from tollway import cli_webhooks

    cli_webhooks.add_parsers(what, action)

    rec = action(
        what,
        "reconcile",
        "compare the order ledger, the payment provider and Temporal; exit 1 on discrepancies",
    )
    rec.add_argument("--since-hours", type=float, default=24.0, help="orders of this window")
    rec.add_argument(
        "--refund-threshold-minutes",
        type=float,
        default=15.0,
        help="a refund not done after this long is a discrepancy",
    )

    wf = what.add_parser("workflow").add_subparsers(dest="action", required=True)
    create = action(wf, "create", "create a workflow from a JSON or YAML definition")
    create.add_argument("--org", required=True)
    create.add_argument("--file", required=True)
    update = action(wf, "update", "publish a new version of a workflow")
    update.add_argument("id")
    update.add_argument("--file", required=True)
    action(wf, "list", "list workflows").add_argument("--org")
    action(wf, "schema", "print the definition JSON Schema")
    return parser


def _fail(args: argparse.Namespace, message: str, code: int, details: Sequence[str] = ()) -> int:
    """One clear line (and the details) on stderr, or under --json one JSON object."""
    if getattr(args, "json", False):
        payload: dict[str, Any] = {"error": message}
        if details:
            payload["details"] = list(details)
        sys.stdout.write(json.dumps(payload) + "\n")
    else:
        prefix = "" if message.startswith("tollway ") else "error: "
        sys.stderr.write(prefix + message + ("".join(f"\n  {d}" for d in details)) + "\n")
    return code


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    code = 0
    try:
        if args.command == "admin":
            code = _admin(args)
        elif args.command == "migrate":
            code = _migrate(args)
        elif args.command == "api":
            import uvicorn

            engine = make_engine(settings_for("api").database_url)
            try:
                require_current(engine)  # one clear line here, not a traceback from the lifespan
            finally:
                engine.dispose()
            # Our own access log (request id, redacted query) replaces uvicorn's, which
            # would write ?client_token=… into the log.
            uvicorn.run(
                "api.app:serve_app",
                factory=True,
                host=args.host,
                port=args.port,
                access_log=False,
                log_config=None,
                # A small answer's headers and body in one write (api/http_protocol.py).
                http="api.http_protocol:CoalescingHttpToolsProtocol",
            )
        elif args.command == "worker":
            from worker.main import main as worker_main

            worker_main()
        elif args.command == "dev":
            from tollway.devstack import run_dev

            code = run_dev()
    except DefinitionError as exc:
        lines = [f"{path}: {message}" for path, message in exc.errors]
        code = _fail(args, "invalid workflow definition", 2, lines)
    except (admin.AdminError, SecretError, SettleError, WebhookError, LookupError) as exc:
        code = _fail(args, str(exc).strip("'\""), 2)
    except (SettingsError, SchemaNotCurrent) as exc:
        code = _fail(args, f"tollway {args.command}: {exc}", 2)
    except DATABASE_DOWN as exc:
        code = _fail(args, f"the database did not answer ({type(exc).__name__}); retry later", 3)
    except (TemporalUnreachable, RPCError) as exc:
        if isinstance(exc, RPCError) and exc.status != RPCStatusCode.UNAVAILABLE:
            raise
        address = get_settings().temporal_address
        code = _fail(args, f"Temporal at {address} did not answer; retry later", 3)
    sys.stdout.flush()
    sys.stderr.flush()
    # A process that used a temporalio client can crash at interpreter exit (sdk-python#300);
    # leaving with os._exit after flushing avoids it.
    os._exit(code)
