"""Tollway's own processes for tests that need them real: ``tollway api`` and ``tollway worker``
with a test's settings, each waited for until it serves, killed (or stopped) afterwards."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from tollway.devstack import wait_for_api
from tollway.settings import Settings

TOLLWAY = [sys.executable, "-c", "from tollway.cli import main; main()"]


def run_tollway(
    *args: str,
    env: dict[str, str],
    stdin: str | None = None,
    timeout: float = 60,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``tollway ARGS`` run to its end as an operator runs it, configured by ``env`` alone
    (and a ``PATH``), its output captured as text."""
    return subprocess.run(
        [*TOLLWAY, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", **env},
    )


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that gives a process ``settings`` (every field the test set)."""
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "TEMPORAL_ADDRESS": settings.temporal_address,
    }
    for name in settings.model_fields_set - {"database_url", "temporal_address"}:
        value = getattr(settings, name)
        if value is not None:
            shown = value.get_secret_value() if isinstance(value, SecretStr) else value
            env[f"TOLLWAY_{name.upper()}"] = str(shown)
    return {**env, **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_serving(base: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    if wait_for_api(f"{base}/healthz", proc, time.monotonic() + timeout):
        return
    if proc.poll() is not None:
        raise RuntimeError(f"the API exited with {proc.returncode}")
    raise RuntimeError(f"the API at {base} did not start")


@dataclass(frozen=True)
class ApiProcess:
    base: str
    proc: subprocess.Popen[bytes]


@contextmanager
def api_process(settings: Settings, port: int | None = None, **extra: str) -> Iterator[ApiProcess]:
    """``tollway api`` on 127.0.0.1, yielded once it answers."""
    port = port or free_port()
    proc = subprocess.Popen(
        [*TOLLWAY, "api", "--port", str(port)],
        env=settings_env(settings, **extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base, proc)
        yield ApiProcess(base, proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@contextmanager
def worker_process(
    settings: Settings, metrics_port: int = 0, **extra: str
) -> Iterator[subprocess.Popen[bytes]]:
    """``tollway worker``, yielded once it polls its task queue."""
    env = settings_env(settings, TOLLWAY_WORKER_METRICS_PORT=str(metrics_port), **extra)
    proc = subprocess.Popen([*TOLLWAY, "worker"], env=env, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # wait until it polls
            if b"worker started" in line:
                break
        else:
            raise RuntimeError(f"worker exited with {proc.wait()}")
        # Keep reading, so that a worker that logs a lot never blocks on a full pipe.
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
