"""How Tollway's processes talk to Temporal on the wire: gRPC messages compressed or not, as
``TOLLWAY_TEMPORAL_GRPC_COMPRESSION`` says (uncompressed unless asked: the payloads are
ciphertext, which gzip cannot shrink). Observed through a loopback proxy that reads the
HTTP/2 frames the client sends and notes, for each request, the gRPC message's compressed
flag."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

from tests.conftest import make_settings
from tollway.settings import SettingsError, settings_for
from tollway.temporal import connect

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, PADDED = 0x0, 0x8


class GrpcFlags:
    """Reads the client's side of HTTP/2 connections: the compressed flag (the first byte of a
    gRPC message) of each request stream's first DATA frame, by stream."""

    def __init__(self) -> None:
        self.flags: list[int] = []
        self._buffer = b""
        self._seen: set[int] = set()
        self._preface = True

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        if self._preface:
            if len(self._buffer) < len(PREFACE):
                return
            assert self._buffer.startswith(PREFACE)
            self._buffer, self._preface = self._buffer[len(PREFACE) :], False
        while len(self._buffer) >= 9:
            length = int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < 9 + length:
                return
            kind, flags = self._buffer[3], self._buffer[4]
            stream = int.from_bytes(self._buffer[5:9], "big") & 0x7FFFFFFF
            payload = self._buffer[9 : 9 + length]
            self._buffer = self._buffer[9 + length :]
            if kind == DATA and stream not in self._seen and payload:
                body = payload[1 : len(payload) - payload[0]] if flags & PADDED else payload
                self._seen.add(stream)
                self.flags.append(body[0])


@contextlib.asynccontextmanager
async def proxy(target: str) -> AsyncIterator[tuple[str, list[GrpcFlags]]]:
    host, port = target.rsplit(":", 1)
    connections: list[GrpcFlags] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   seen: GrpcFlags | None) -> None:  # fmt: skip
        try:
            while chunk := await reader.read(65536):
                if seen is not None:
                    seen.feed(chunk)
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        seen = GrpcFlags()
        connections.append(seen)
        await asyncio.gather(
            pipe(reader, upstream_writer, seen), pipe(upstream_reader, writer, None)
        )

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}", connections


@pytest.mark.parametrize(("mode", "flag"), [("none", 0), ("gzip", 1)])
async def test_grpc_messages_are_compressed_only_when_asked(
    database_url: str, temporal_address: str, mode: str, flag: int
) -> None:
    async with proxy(temporal_address) as (address, connections):
        overrides = {} if mode == "none" else {"temporal_grpc_compression": mode}
        settings = make_settings(database_url, address, **overrides)
        client = await connect(settings)
        for _ in range(3):
            await client.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace=settings.temporal_namespace)
            )
    flags = [f for seen in connections for f in seen.flags]
    assert len(flags) >= 4  # the connect's system info, then the three describes
    assert flags == [flag] * len(flags)


def test_an_unknown_compression_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOLLWAY_TEMPORAL_GRPC_COMPRESSION", "brotli")
    for process in ("api", "worker"):
        with pytest.raises(SettingsError, match="^TOLLWAY_TEMPORAL_GRPC_COMPRESSION: .*'gzip'"):
            settings_for(process)
