"""``tollway dev``: the whole stack on this machine, with embedded defaults.

Starts the Temporal dev server (SQLite file under ``var/``, UI on :8233), the worker and the
API (uvicorn on :8000) as child processes, seeds a demo organization, token and two workflows
(once: a second run reuses them), prints how to call it, and stops every child on Ctrl-C or
SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from tollway import admin
from tollway.codec import new_key_entry
from tollway.db import make_engine
from tollway.definitions import parse_definition
from tollway.migrate import migrate
from tollway.org_secrets import new_key
from tollway.settings import VAR_DIR, get_settings
from tollway.temporal import connect
from tollway.temporal_server import start_dev_command

DEMO_FILE = VAR_DIR / "demo.json"
SECRETS_FILE = VAR_DIR / "secrets.json"
# The secrets `tollway dev` makes for itself (none has a built-in value anywhere).
DEV_SECRETS = {
    "TOLLWAY_CLIENT_TOKEN_SECRET": "",
    "TOLLWAY_LOCAL_WEBHOOK_SECRET": "whsec_",
    "TOLLWAY_SECRETS_KEY": "fernet",
    "TOLLWAY_PAYLOAD_KEYS": "aes",
}

FREE_DEMO: dict[str, Any] = {
    "name": "Greeting (free)",
    "access": "public_execute",
    "steps": [
        {
            "id": "shape",
            "kind": "transform",
            "expression": "{greeting: join(' ', ['hello', request.name])}",
        }
    ],
    "output": "steps.shape",
}
PRICED_DEMO: dict[str, Any] = {
    **FREE_DEMO,
    "name": "Greeting (priced)",
    "price": {"amount": 500, "currency": "usd"},
}


def _say(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _generate(prefix: str) -> str:
    if prefix == "fernet":
        return new_key()
    if prefix == "aes":
        return new_key_entry()
    return prefix + secrets.token_urlsafe(32)


def dev_secrets(path: Path = SECRETS_FILE) -> dict[str, str]:
    """Random secrets, generated once into ``path`` (mode 0600) and reused by later runs."""
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    missing = {name: prefix for name, prefix in DEV_SECRETS.items() if not stored.get(name)}
    if missing:
        stored.update({name: _generate(prefix) for name, prefix in missing.items()})
        _write_private(path, stored)
    path.chmod(0o600)
    return stored


def seed_demo(engine: Engine, path: Path = DEMO_FILE) -> dict[str, str]:
    """Create the demo once; later runs reuse what ``path`` recorded if it still exists."""
    if path.exists():
        demo: dict[str, str] = json.loads(path.read_text())
        if admin.find_token(engine, demo["token"]) and admin.find_workflow(
            engine, demo["pricedWorkflowId"]
        ):
            if not demo.get("operatorToken"):  # demos made before operator tokens existed
                demo["operatorToken"] = _operator_token(engine, demo["organizationId"])
                _write_private(path, demo)
            return demo
    org = admin.find_organization_by_name(engine, "Demo") or admin.create_organization(
        engine, "Demo"
    )
    _row, token = admin.create_token(engine, org.id, "50/second")
    free = admin.create_workflow(engine, org.id, parse_definition(FREE_DEMO))
    priced = admin.create_workflow(engine, org.id, parse_definition(PRICED_DEMO))
    demo = {
        "organizationId": org.id,
        "token": token,
        "freeWorkflowId": free.id,
        "pricedWorkflowId": priced.id,
        "operatorToken": _operator_token(engine, org.id),
    }
    _write_private(path, demo)
    return demo


def _operator_token(engine: Engine, organization_id: str) -> str:
    """A token that may only decode payloads (the Temporal UI's codec), for the operator."""
    _row, token = admin.create_token(engine, organization_id, "50/second", ("codec",))
    return token


def _write_private(path: Path, values: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(values, out, indent=2)
    path.chmod(0o600)


async def _wait_for_temporal(deadline: float) -> None:
    settings = get_settings()
    while True:
        try:
            await connect(settings)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Straight to 127.0.0.1: an HTTP proxy set in the environment never sees the probe."""


def wait_for_api(url: str, api: subprocess.Popen[bytes], deadline: float) -> bool:
    """Whether the API answers ``url`` before ``deadline``: the banner's curl line must work
    the moment it is printed. False at once if the API exits (the caller says so)."""
    while api.poll() is None and time.monotonic() < deadline:
        try:
            with _LOOPBACK.open(url, timeout=1) as answer:
                if answer.status == 200:
                    return True
        except OSError:  # refused while it starts; URLError and timeouts are OSErrors
            pass
        time.sleep(0.1)
    return False


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    for child in reversed(children):
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    end = time.monotonic() + 10
    for child in reversed(children):
        try:
            child.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def run_dev() -> int:
    settings = get_settings()
    ports = {
        "Temporal": settings.dev_temporal_port,
        "Temporal UI": settings.dev_ui_port,
        "API": settings.dev_api_port,
        **(
            {"worker metrics": settings.worker_metrics_port} if settings.worker_metrics_port else {}
        ),
    }
    busy = [f"{port} ({name})" for name, port in ports.items() if _port_in_use(port)]
    if busy:
        _say(f"tollway dev: port {', '.join(busy)} on 127.0.0.1 is already in use.")
        _say(
            "Stop whatever holds it (another `tollway dev`?) or choose other ports with "
            "TOLLWAY_DEV_TEMPORAL_PORT, TOLLWAY_DEV_UI_PORT and TOLLWAY_DEV_API_PORT."
        )
        return 1
    VAR_DIR.mkdir(exist_ok=True)
    api_base = f"http://127.0.0.1:{settings.dev_api_port}"
    env = {
        **dev_secrets(),  # a value already set in the environment wins
        **os.environ,
        "TEMPORAL_ADDRESS": f"127.0.0.1:{settings.dev_temporal_port}",
        "TOLLWAY_PUBLIC_BASE_URL": os.environ.get("TOLLWAY_PUBLIC_BASE_URL", api_base),
    }
    os.environ.update(env)
    get_settings.cache_clear()
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    api_command = [
        sys.executable, "-m", "uvicorn", "api.app:serve_app", "--factory",
        "--host", "127.0.0.1", "--port", str(settings.dev_api_port), "--no-access-log",
        "--http", "api.http_protocol:CoalescingHttpToolsProtocol",
    ]  # fmt: skip
    server_command = start_dev_command(
        VAR_DIR / "temporal.db",
        settings.dev_temporal_port,
        settings.dev_ui_port,
        codec_endpoint=f"{api_base}/codec",  # the UI decodes payloads through the API
    )
    try:
        with (VAR_DIR / "temporal.log").open("ab") as server_log:
            children.append(
                subprocess.Popen(
                    server_command, env=env, start_new_session=True,
                    stdout=server_log, stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
        asyncio.run(_wait_for_temporal(time.monotonic() + 60))
        engine = make_engine(settings.database_url)
        migrate(engine)  # before the worker and the API, which only check it
        demo = seed_demo(engine)
        engine.dispose()
        for command in ([sys.executable, "-m", "worker"], api_command):
            children.append(subprocess.Popen(command, env=env, start_new_session=True))
        healthz = f"http://127.0.0.1:{settings.dev_api_port}/healthz"
        if wait_for_api(healthz, children[-1], time.monotonic() + 60):
            _banner(demo, settings.dev_api_port, settings.dev_ui_port)
        elif children[-1].poll() is None:
            _say(f"tollway dev: the API did not answer {healthz} within 60 s; stopping.")
            return 1  # (an API that exited is reported by the loop below)
        while not stopping:
            dead = [c for c in children if c.poll() is not None]
            if dead:
                name = ("temporal", "worker", "api")[children.index(dead[0])]
                _say(f"tollway dev: {name} exited with {dead[0].returncode}; stopping.")
                return 1
            time.sleep(0.2)
        _say("tollway dev: stopping…")
        return 0
    finally:
        _stop(children)


def _banner(demo: dict[str, str], api_port: int, ui_port: int) -> None:
    base = f"http://127.0.0.1:{api_port}"
    _say()
    _say("Tollway is running.")
    _say(f"  API          {base}")
    _say(f"  Temporal UI  http://127.0.0.1:{ui_port}  (payloads are encrypted: to read them,")
    _say(f"               sign in at {base}/codec/login with the operator token below)")
    _say(f"  Demo org     {demo['organizationId']}")
    _say(f"  API token    {demo['token']}")
    _say(f"  Operator     {demo.get('operatorToken', '')}  (codec scope only)")
    _say(f"  Free         {demo['freeWorkflowId']}")
    _say(f"  Priced       {demo['pricedWorkflowId']}  (5.00 USD)")
    _say()
    _say("Try:")
    _say(f"  curl -s -X POST '{base}/v1/public/workflows/{demo['freeWorkflowId']}/executions' \\")
    _say(f"    -H 'Authorization: Bearer {demo['token']}' -H 'Content-Type: application/json' \\")
    _say(
        '    -d \'{"sourceSystem":"demo","sourceEntityType":"greeting",'
        '"requestPayload":{"name":"Ada"}}\''
    )
    _say("  The priced workflow answers with a checkoutUrl: open it to pay (or cancel).")
    _say()
    _say("Ctrl-C stops everything; data stays in var/ (Temporal's log: var/temporal.log).")
