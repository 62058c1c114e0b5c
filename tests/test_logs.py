"""Logs of the real API process: JSON lines (stderr is not a terminal), the access log through
the same logger with the request id and execution id, and no client token anywhere."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import httpx
from sqlalchemy import Engine

from tests.helpers import CLIENT_TOKEN_SECRET, PAYLOAD_KEYS, WEBHOOK_SECRET
from tests.processes import TOLLWAY


def test_api_logs_json_lines_with_request_ids_and_no_client_tokens(
    database_url: str, temporal_address: str, engine: Engine
) -> None:
    """``engine``: the suite's database, migrated (alone, this test found none)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": database_url,
        "TEMPORAL_ADDRESS": temporal_address,
        "TOLLWAY_CLIENT_TOKEN_SECRET": CLIENT_TOKEN_SECRET,
        "TOLLWAY_LOCAL_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "TOLLWAY_PAYLOAD_KEYS": PAYLOAD_KEYS,
    }
    proc = subprocess.Popen(
        [*TOLLWAY, "api", "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    secret = "ct_eyJlIjoiZXhlX2FiYyJ9.c2VjcmV0LXNpZ25hdHVyZQ"
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        answered = httpx.get(
            f"{base}/v1/public/executions/exe_abc",
            params={"client_token": secret, "other": "kept"},
            headers={"X-Request-ID": "req-from-the-caller-42"},
        )
        assert answered.status_code == 401
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    lines = [line for line in stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is JSON
    [access] = [r for r in records if r.get("event") == "request" and r["path"] != "/healthz"]
    assert access["requestId"] == "req-from-the-caller-42"
    assert access["executionId"] == "exe_abc"
    assert access["status"] == 401 and access["method"] == "GET"
    assert access["query"] == "client_token=%5Bredacted%5D&other=kept"
    assert secret not in stderr
    assert any(r.get("logger", "").startswith("uvicorn") for r in records)  # one pipeline


def test_json_lines_encode_what_the_standard_encoder_did() -> None:
    """Every value a log line can carry still makes a line: an integer past 64 bits; a lone
    surrogate, which the fast encoder refuses and the standard encoder takes; non-string keys
    written as strings; unknown objects as their repr."""
    from structlog.processors import JSONRenderer

    from tollway.logging import _json_line

    render = JSONRenderer(serializer=_json_line)
    thing = object()
    cases: list[tuple[dict[str, object], dict[str, object]]] = [
        ({"event": "request", "status": 200}, {"event": "request", "status": 200}),
        ({"counts": {1: 2}}, {"counts": {"1": 2}}),
        ({"big": 2**70}, {"big": 2**70}),
        ({"odd": "a\ud800b"}, {"odd": "a\ud800b"}),
        ({"thing": thing}, {"thing": repr(thing)}),
    ]
    for event, expected in cases:
        line = render(None, "info", dict(event))
        assert isinstance(line, str)
        assert json.loads(line) == expected
