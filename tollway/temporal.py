"""Connecting to Temporal the one way every process does it (one data converter everywhere)."""

from __future__ import annotations

from collections.abc import Sequence

from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.runtime import Runtime
from temporalio.service import GrpcCompression

from tollway.codec import with_codec
from tollway.settings import Settings


def data_converter(settings: Settings) -> DataConverter:
    """Pydantic payloads, encrypted with ``TOLLWAY_PAYLOAD_KEYS`` when set."""
    if settings.payload_keys is None:
        return pydantic_data_converter
    return with_codec(pydantic_data_converter, settings.payload_keys.get_secret_value())


COMPRESSION = {"none": GrpcCompression.NONE, "gzip": GrpcCompression.GZIP}


class TemporalUnreachable(Exception):
    """Temporal did not answer (at connect, or within a call's deadline)."""


async def connect(
    settings: Settings,
    runtime: Runtime | None = None,
    interceptors: Sequence[Interceptor] = (),
) -> Client:
    try:
        return await Client.connect(
            settings.temporal_address,
            namespace=settings.temporal_namespace,
            data_converter=data_converter(settings),
            runtime=runtime,
            interceptors=interceptors,
            grpc_compression=COMPRESSION[settings.temporal_grpc_compression],
        )
    except RuntimeError as err:  # the SDK's "Failed client connect"
        raise TemporalUnreachable(
            f"Temporal at {settings.temporal_address} did not answer"
        ) from err
