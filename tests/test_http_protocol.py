"""The API's HTTP protocol (api/http_protocol.py): uvicorn's httptools protocol with each small
answer's header block and body in one write.

It is driven two ways. In memory, uvicorn's own protocol code runs over a transport that
records each write, so the count is exact; uvicorn's stock protocol is the control. Under a
real uvicorn server on loopback, raw sockets check what a client reads: keep-alive,
pipelining, HEAD and 204, a stream whose chunks leave as they are sent, and a large body."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.importer import import_from_string
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from api.http_protocol import (
    HOLD_BELOW,
    PROTOCOL,
    CoalescingHttpToolsProtocol,
    CoalescingTransport,
)
from tests.servers import serve

ROOT = Path(__file__).resolve().parent.parent

releases = [threading.Event(), threading.Event()]  # the stream waits on each in turn


async def _until(event: threading.Event) -> None:
    while not event.is_set():
        await asyncio.sleep(0.005)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    path = scope["path"]
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await _until(releases[0])
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await _until(releases[1])
        await send({"type": "http.response.body", "body": b"second"})
        return
    if path == "/empty":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b"x" * (4 * HOLD_BELOW) if path == "/large" else b'{"path":"%s"}' % path.encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Recording(asyncio.Transport):
    """The socket's side of a transport, in memory: what was written, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _writes_for(
    protocol_class: type[HttpToolsProtocol], request: bytes
) -> tuple[list[bytes], list[bytes]]:
    """What was written when the answer was complete, and a moment later."""
    config = Config(app, lifespan="off", log_level="error")
    protocol = protocol_class(config, ServerState(), {}, asyncio.get_running_loop())
    transport = Recording()
    at_end: list[bytes] = []
    complete = protocol.on_response_complete

    def on_response_complete() -> None:  # the moment uvicorn has finished the answer
        complete()
        at_end.extend(transport.writes)

    protocol.on_response_complete = on_response_complete  # type: ignore[method-assign]
    protocol.connection_made(transport)
    protocol.data_received(request)
    for _ in range(200):
        await asyncio.sleep(0.005)
        if at_end:
            break
    await asyncio.sleep(0.01)  # past the hold: anything held has been written by now
    protocol.connection_lost(None)
    return at_end, transport.writes


GET = b"GET /answer HTTP/1.1\r\nHost: t\r\n\r\n"


async def test_a_small_answer_is_one_write_where_uvicorn_makes_two() -> None:
    _, stock = await _writes_for(HttpToolsProtocol, GET)
    at_end, ours = await _writes_for(CoalescingHttpToolsProtocol, GET)
    assert at_end == ours
    assert len(stock) == 2  # the control: header block, then body
    assert stock[0].startswith(b"HTTP/1.1 200 OK\r\n") and stock[0].endswith(b"\r\n\r\n")
    assert ours == [b"".join(stock)]
    assert ours[0].endswith(b'\r\n\r\n{"path":"/answer"}')


async def test_an_answer_without_a_body_leaves_at_its_end() -> None:
    at_end, ours = await _writes_for(CoalescingHttpToolsProtocol, GET.replace(b"GET", b"HEAD"))
    _, stock = await _writes_for(HttpToolsProtocol, GET.replace(b"GET", b"HEAD"))
    assert at_end == ours == stock  # not held past the end of the answer
    length = len(b'{"path":"/answer"}')
    assert len(ours) == 1 and ours[0].endswith(b"content-length: %d\r\n\r\n" % length)


async def test_a_held_write_goes_out_within_the_hold_and_before_close() -> None:
    loop = asyncio.get_running_loop()
    inner = Recording()
    transport = CoalescingTransport(inner, loop)
    transport.write(b"head")
    assert inner.writes == []
    await asyncio.sleep(0.02)
    assert inner.writes == [b"head"]  # nothing followed: written when the hold ran out
    transport.write(b"a")
    transport.write(b"b")  # joined with the held one
    transport.write(b"x" * HOLD_BELOW)  # large: never held
    assert inner.writes == [b"head", b"ab", b"x" * HOLD_BELOW]
    transport.write(b"last")
    transport.close()
    assert inner.writes[-1] == b"last" and inner.closed
    transport.write(b"after")
    await asyncio.sleep(0.02)
    assert inner.writes[-1] == b"last"  # nothing is written to a closing connection
    reused, fresh = bytearray(b"mine"), Recording()
    transport = CoalescingTransport(fresh, loop)
    transport.write(reused)
    reused[:] = b"gone"  # the caller's buffer, reused once write() returned
    transport.write(b"!")
    assert fresh.writes == [b"mine!"]
    aborted = CoalescingTransport(Recording(), loop)
    aborted.write(b"dropped")
    aborted.abort()
    await asyncio.sleep(0.02)
    assert aborted._transport.writes == []  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    with serve(app, http=PROTOCOL) as base:
        host, port = base.removeprefix("http://").split(":")
        yield host, int(port)


def _read_answer(
    sock: socket.socket, buffer: bytearray, bodiless: bool = False
) -> tuple[bytes, bytes]:
    """One answer with a Content-Length (or ``bodiless``: to a HEAD, or a 204) from
    ``buffer``, topped up from ``sock``."""
    while b"\r\n\r\n" not in buffer:
        buffer += sock.recv(65536)
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    buffer[:] = rest
    headers = dict(
        line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line
    )
    if bodiless:
        return head, b""
    length = int(headers[b"content-length"])
    while len(buffer) < length:
        buffer += sock.recv(65536)
    body = bytes(buffer[:length])
    del buffer[:length]
    return head, body


def test_answers_on_a_kept_alive_connection_pipelined_or_not(server: tuple[str, int]) -> None:
    with socket.create_connection(server, timeout=5) as sock:
        buffer = bytearray()
        for path in (b"/one", b"/two"):
            sock.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path)
            head, body = _read_answer(sock, buffer)
            assert head.startswith(b"HTTP/1.1 200 OK") and body == b'{"path":"%s"}' % path
        paths = [b"/p%d" % n for n in range(5)]
        sock.sendall(b"".join(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % p for p in paths))
        assert [_read_answer(sock, buffer)[1] for _ in paths] == [
            b'{"path":"%s"}' % p for p in paths
        ]
        sock.sendall(b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\nGET /empty HTTP/1.1\r\nHost: t\r\n\r\n")
        head, _ = _read_answer(sock, buffer, bodiless=True)
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert head.endswith(b"content-length: %d" % len(b'{"path":"/h"}'))
        head, body = _read_answer(sock, buffer, bodiless=True)
        assert head.startswith(b"HTTP/1.1 204") and body == b""
        sock.sendall(b"GET /large HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        head, body = _read_answer(sock, buffer)
        assert body == b"x" * (4 * HOLD_BELOW)
        assert sock.recv(65536) == b""  # closed after the answer, nothing left behind


def _receive_until(sock: socket.socket, received: bytes, part: bytes) -> bytes:
    sock.settimeout(0.2)
    deadline = time.monotonic() + 5
    while part not in received and time.monotonic() < deadline:
        try:
            received += sock.recv(65536)
        except TimeoutError:
            pass
    return received


def test_a_stream_sends_its_headers_and_each_chunk_as_they_come(server: tuple[str, int]) -> None:
    for event in releases:
        event.clear()
    with socket.create_connection(server, timeout=5) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        # The headers arrive while the app waits to send its first chunk (an event
        # stream's open), and the first chunk while it waits to send the second.
        received = _receive_until(sock, b"", b"\r\n\r\n")
        assert b"transfer-encoding: chunked\r\n\r\n" in received
        releases[0].set()
        received = _receive_until(sock, received, b"5\r\nfirst\r\n")
        assert received.endswith(b"\r\n\r\n5\r\nfirst\r\n")
        releases[1].set()
        received = _receive_until(sock, received, b"0\r\n\r\n")
        assert received.endswith(b"\r\n\r\n5\r\nfirst\r\n6\r\nsecond\r\n0\r\n\r\n")


def test_every_way_the_api_is_run_uses_it() -> None:
    assert import_from_string(PROTOCOL) is CoalescingHttpToolsProtocol
    for runner in ("tollway/cli.py", "tollway/devstack.py"):  # tollway api, tollway dev
        assert f'"{PROTOCOL}"' in (ROOT / runner).read_text(), runner
    assert "PROTOCOL" in (ROOT / "bench/run.py").read_text()
