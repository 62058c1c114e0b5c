"""Payload encryption: every payload Tollway hands Temporal -- workflow inputs, activity
inputs and results, update arguments, memo, query answers -- is AES-256-GCM encrypted by this
codec before it leaves the process, so the Temporal server, its database and anyone who can
open the Temporal UI see ciphertext. Search attributes stay plain (they hold no personal
data: ids, statuses, the caller's source system and external reference).

Keys come from ``TOLLWAY_PAYLOAD_KEYS`` as ``id:base64key`` entries, comma-separated; the
first encrypts, every one decrypts, and each payload names its key id in its metadata, so keys
rotate without breaking histories. Payloads without our encoding (histories recorded before
encryption) pass through untouched. Authorized operators read payloads in the UI through the
API's codec endpoint (``/codec/decode``).
"""

from __future__ import annotations

import base64
import dataclasses
import os
from collections.abc import Sequence
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter, PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"


class CodecError(ValueError):
    """Keys are malformed, or a payload names a key this process does not have."""


def parse_keys(spec: str) -> list[tuple[str, bytes]]:
    keys: list[tuple[str, bytes]] = []
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        key_id, _, encoded = entry.partition(":")
        try:
            key = base64.b64decode(encoded, validate=True)
        except ValueError:
            key = b""
        if not key_id or len(key) != 32:
            raise CodecError(
                "TOLLWAY_PAYLOAD_KEYS entries must be id:base64 of 32 random bytes "
                f"(entry {len(keys) + 1} is not)"
            )
        keys.append((key_id, key))
    if not keys:
        raise CodecError("TOLLWAY_PAYLOAD_KEYS must hold at least one key")
    return keys


def new_key_entry(key_id: str = "k1") -> str:
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


class EncryptionCodec(PayloadCodec):
    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        self._current_id, current = keys[0]
        self._encryptor = AESGCM(current)
        self._by_id = {key_id: AESGCM(key) for key_id, key in keys}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._decrypt(p) for p in payloads]

    def _encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(12)
        sealed = self._encryptor.encrypt(nonce, payload.SerializeToString(), None)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID: self._current_id.encode()},
            data=nonce + sealed,
        )

    def _decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # recorded before encryption: plain
        key_id = payload.metadata.get(KEY_ID, b"").decode()
        cipher = self._by_id.get(key_id)
        if cipher is None:
            raise CodecError(f"payload encrypted with key {key_id!r}, which is not configured")
        try:
            plain = cipher.decrypt(payload.data[:12], payload.data[12:], None)
        except InvalidTag:
            raise CodecError(f"payload does not decrypt with key {key_id!r}") from None
        return Payload.FromString(plain)


@lru_cache(maxsize=4)
def codec_for(keys_spec: str) -> EncryptionCodec:
    """The codec for these keys, built once per process."""
    return EncryptionCodec(parse_keys(keys_spec))


def with_codec(converter: DataConverter, keys_spec: str) -> DataConverter:
    return dataclasses.replace(converter, payload_codec=codec_for(keys_spec))
