"""`tollway dev` as a new user runs it: starts everything, serves real HTTP on loopback,
keeps data across runs without duplicating the demo, stops cleanly, refuses a busy port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.processes import TOLLWAY, free_port, run_tollway
from tests.servers import serve
from tollway.devstack import _port_in_use, wait_for_api


def dev_env(ports: dict[str, int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLWAY_")}
    env.pop("DATABASE_URL", None)
    env.pop("TEMPORAL_ADDRESS", None)
    env.update({f"TOLLWAY_DEV_{name}_PORT": str(port) for name, port in ports.items()})
    env["TOLLWAY_WORKER_METRICS_PORT"] = str(free_port())
    return env


def start_dev(cwd: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [*TOLLWAY, "dev"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + 90
    for line in proc.stdout:
        seen += line
        if "Ctrl-C stops everything" in line or time.monotonic() > deadline:
            break
    assert "Tollway is running" in seen, seen
    return proc, seen


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


def wait_http(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


def port_free(port: int) -> bool:
    return not _port_in_use(port)


def test_dev_stack_runs_keeps_data_and_stops_cleanly(tmp_path: Path) -> None:
    ports = {"TEMPORAL": free_port(), "UI": free_port(), "API": free_port()}
    env = dev_env(ports)
    api = f"http://127.0.0.1:{ports['API']}"

    proc, banner = start_dev(tmp_path, env)
    try:
        demo = json.loads((tmp_path / "var" / "demo.json").read_text())
        assert demo["token"] in banner and demo["pricedWorkflowId"] in banner
        assert demo["operatorToken"] in banner and "/codec/login" in banner
        assert "curl" in banner
        # The banner is printed once the API answers: its curl line works at once.
        assert httpx.get(f"{api}/healthz", timeout=5).status_code == 200
        auth = {"Authorization": f"Bearer {demo['token']}"}
        created = httpx.post(
            f"{api}/v1/public/workflows/{demo['freeWorkflowId']}/executions",
            json={"sourceSystem": "dev", "sourceEntityType": "t", "requestPayload": {"name": "Z"}},
            headers=auth,
            timeout=30,
        )
        assert created.status_code == 200, created.text
        eid = created.json()["data"]["execution"]["id"]
        priced = httpx.post(
            f"{api}/v1/public/workflows/{demo['pricedWorkflowId']}/executions",
            json={"sourceSystem": "dev", "sourceEntityType": "t"},
            headers=auth,
            timeout=30,
        )
        assert priced.json()["data"]["execution"]["status"] == "awaiting_payment"
        wait_http(f"http://127.0.0.1:{ports['UI']}/")
    finally:
        assert stop(proc) == 0
    assert all(port_free(p) for p in ports.values())

    proc, banner = start_dev(tmp_path, env)
    try:
        again = json.loads((tmp_path / "var" / "demo.json").read_text())
        assert again == demo  # same org, token and workflows: not duplicated
        view = httpx.get(f"{api}/v1/public/executions/{eid}", headers=auth, timeout=30)
        assert view.status_code == 200
        assert view.json()["data"]["execution"]["responsePayload"] == {"greeting": "hello Z"}
        orgs = run_tollway("admin", "org", "list", "--json", cwd=tmp_path, env=env)
        assert [o["name"] for o in json.loads(orgs.stdout)] == ["Demo"]
    finally:
        assert stop(proc) == 0


def test_busy_port_gives_a_clear_message(tmp_path: Path) -> None:
    ports = {"TEMPORAL": free_port(), "UI": free_port(), "API": free_port()}
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", ports["API"]))
        holder.listen()
        result = run_tollway("dev", cwd=tmp_path, env=dev_env(ports))
    assert result.returncode == 1
    assert f"port {ports['API']} (API)" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "var").exists()


def test_the_wait_for_the_api_never_goes_through_a_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A developer's HTTP_PROXY must not keep ``tollway dev`` from seeing its own API."""

    async def ok(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    dead_proxy = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, dead_proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with serve(ok) as base:
            assert wait_for_api(f"{base}/healthz", alive, time.monotonic() + 3)
    finally:
        alive.kill()
        alive.wait()
