"""Real HTTP servers on loopback for tests (uvicorn in a thread)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp

from api.http_protocol import PROTOCOL


@contextmanager
def serve(
    app: ASGIApp, host: str = "127.0.0.1", lifespan: str = "off", http: str = PROTOCOL
) -> Iterator[str]:
    """``app`` under uvicorn with the API's own HTTP protocol (``http``), as it runs in
    ``tollway api``."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="error", lifespan=lifespan, http=http)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(5)
