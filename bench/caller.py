"""The bench's HTTP caller: keep-alive HTTP/1.1 over asyncio, responses parsed by httptools.

The bench shares two cores between the load it makes and the server it measures, so every
microsecond the caller spends is taken from Temporal and the API alike. aiohttp spends
0.5-0.7 ms of CPU per create with its JSON answer; this caller, like wrk or h2load, does only
what a measurement needs (write the request, parse the answer, hand back status and body),
in about 0.2 ms. `make bench` prints each side's caller CPU and the floor through each client.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, cast

import httptools


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._body: list[bytes] = []
        self._answer: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc or ConnectionError("connection closed"))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        assert self._answer is not None
        self._answer.set_result((self._parser.get_status_code(), b"".join(self._body)))
        self._body = []
        if not self._parser.should_keep_alive() and self._transport is not None:
            self.closed = True  # before connection_lost: it must not go back to the pool
            self._transport.close()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    async def send(self, request: bytes) -> tuple[int, bytes]:
        assert self._transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        try:
            return await self._answer
        finally:
            self._answer = None


IDLE_SECONDS = 2.0
"""How long a connection may sit idle and still be reused: under the server's keep-alive
timeout (uvicorn's is 5 s), so that the caller never writes a request on a connection the
server is closing at that moment (the bench's rounds are seconds apart)."""


class Caller:
    """Requests to one ``host:port`` with fixed headers, over up to ``limit`` connections."""

    def __init__(
        self,
        host: str,
        port: int,
        headers: dict[str, str],
        limit: int,
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        self._host, self._port, self._limit = host, port, limit
        fixed = {"Host": f"{host}:{port}", **headers}
        self._headers = "".join(f"{k}: {v}\r\n" for k, v in fixed.items()).encode()
        self._idle: list[tuple[float, _Connection]] = []  # (idle since, connection)
        self._idle_seconds = idle_seconds
        self._slots = asyncio.Semaphore(limit)

    async def _connection(self) -> _Connection:
        fresh_since = time.monotonic() - self._idle_seconds
        while self._idle:
            since, conn = self._idle.pop()
            if not conn.closed and since >= fresh_since:
                return conn
            conn.close()
        loop = asyncio.get_running_loop()
        _transport, conn = await loop.create_connection(_Connection, self._host, self._port)
        return conn

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self._headers
        if body:
            head += b"Content-Type: application/json\r\n"
        head += b"Content-Length: %d\r\n\r\n" % len(body)
        async with self._slots:
            conn = await self._connection()
            answer = await conn.send(head + body)
            if not conn.closed:
                self._idle.append((time.monotonic(), conn))
            return answer

    async def get(self, path: str) -> tuple[int, bytes]:
        return await self.request("GET", path)

    async def post_json(self, path: str, document: Any) -> tuple[int, Any]:
        status, body = await self.request("POST", path, json.dumps(document).encode())
        return status, json.loads(body)

    def close(self) -> None:
        for _since, conn in self._idle:
            conn.close()
        self._idle.clear()
