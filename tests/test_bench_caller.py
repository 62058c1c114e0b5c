"""The bench's lean HTTP caller (bench/caller.py) against a scripted HTTP/1.1 server on
loopback: what it sends, what it reads back, and how it behaves when the server closes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from bench.caller import Caller


@dataclass
class Scripted:
    port: int
    connections: int = 0
    requests: list[tuple[bytes, dict[bytes, bytes], bytes]] = field(default_factory=list)


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[bytes, dict[bytes, bytes], bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    line, *lines = head[:-4].split(b"\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (x.split(b":", 1) for x in lines)}
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return line, headers, body


def _answer(line: bytes, body: bytes) -> bytes:
    path = line.split()[1]
    if path == b"/json":
        echoed = json.dumps({"got": json.loads(body)}).encode()
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (echoed[:5], echoed[5:]))
        return b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    if path == b"/close":
        return b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbye"
    if path == b"/cut":
        return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"
    missing = b"no: " + path
    return b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(missing), missing)


@pytest.fixture
async def server() -> AsyncIterator[Scripted]:
    scripted = Scripted(port=0)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        scripted.connections += 1
        while (request := await _read_request(reader)) is not None:
            scripted.requests.append(request)
            line, headers, body = request
            writer.write(_answer(line, body))
            await writer.drain()
            if line.split()[1] in (b"/close", b"/cut"):
                break
        writer.close()

    listening = await asyncio.start_server(serve, "127.0.0.1", 0)
    scripted.port = listening.sockets[0].getsockname()[1]
    async with listening:
        yield scripted


async def test_it_sends_its_headers_and_body_and_reads_a_chunked_json_answer(
    server: Scripted,
) -> None:
    caller = Caller("127.0.0.1", server.port, {"Authorization": "Bearer t0k"}, limit=4)
    status, answer = await caller.post_json("/json", {"n": 1, "word": "é"})
    assert (status, answer) == (201, {"got": {"n": 1, "word": "é"}})
    line, headers, body = server.requests[0]
    assert line == b"POST /json HTTP/1.1"
    assert headers[b"host"] == f"127.0.0.1:{server.port}".encode()
    assert headers[b"authorization"] == b"Bearer t0k"
    assert headers[b"content-type"] == b"application/json"
    assert json.loads(body) == {"n": 1, "word": "é"}
    status, raw = await caller.get("/other")
    assert (status, raw) == (404, b"no: /other")
    assert server.requests[1][1][b"content-length"] == b"0"
    caller.close()


async def test_it_keeps_connections_alive_up_to_its_limit(server: Scripted) -> None:
    caller = Caller("127.0.0.1", server.port, {}, limit=3)
    for _ in range(5):
        assert (await caller.get("/a"))[0] == 404
    assert server.connections == 1
    answers = await asyncio.gather(*(caller.get(f"/{i}") for i in range(12)))
    assert [status for status, _ in answers] == [404] * 12
    assert [body for _, body in answers] == [f"no: /{i}".encode() for i in range(12)]
    assert server.connections == 3
    caller.close()


async def test_a_closed_connection_is_not_reused_and_a_cut_answer_raises(
    server: Scripted,
) -> None:
    caller = Caller("127.0.0.1", server.port, {}, limit=1)
    assert await caller.get("/close") == (200, b"bye")
    assert (await caller.get("/after"))[0] == 404
    assert server.connections == 2
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(caller.get("/cut"), 5)
    assert (await caller.get("/again"))[0] == 404  # the slot was given back
    assert server.connections == 3
    caller.close()


async def test_a_connection_idle_past_its_expiry_is_not_reused(server: Scripted) -> None:
    """A server closes idle keep-alive connections (uvicorn after 5 s); reusing one as it
    closes fails the request, so the caller drops it first."""
    caller = Caller("127.0.0.1", server.port, {}, limit=1, idle_seconds=0.2)
    assert (await caller.get("/a"))[0] == 404
    assert (await caller.get("/b"))[0] == 404  # reused at once
    assert server.connections == 1
    await asyncio.sleep(0.3)
    assert (await caller.get("/c"))[0] == 404
    assert server.connections == 2
    caller.close()
