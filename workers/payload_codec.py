"""Encrypted history: a payload codec (AES-256-GCM) every client, worker and replayer applies.

Whatever a run carries (its input, plans, diagnoses, reports, activity errors) is sealed before
it leaves the process, so Temporal stores ciphertext; only a holder of the keys (our processes,
and a person through the service's codec endpoint, `workers/codec_routes.py`) reads it.

An encrypted payload is `{encoding: binary/encrypted, encryption-key-id: <id>}` with
`nonce (12 bytes) + AES-GCM(serialized original payload)` as data; the key id is also the
associated data, so a payload cannot be passed off as sealed under another key. Keys rotate
by id: a new key becomes the one that encrypts, and the old ones stay in the ring to read what
they sealed. A payload without that encoding (history from before the codec, or a value the
UI or CLI sent plain) passes through unchanged.

Not encrypted, by Temporal's design (the server routes and indexes by them): workflow ids
(`<runbook>-<target>`), search attributes (runbook, target, status, requested_by), task queue
and workflow type names.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12


class PayloadDecryptionError(Exception):
    """An encrypted payload cannot be read here; the message says which key it needs."""


@dataclasses.dataclass(frozen=True)
class KeyRing:
    """The AES-256 keys by id, and the id of the one that encrypts. Built by
    `workers.codec_keys` from references; never logged (repr hides the keys)."""

    keys: Mapping[str, bytes] = dataclasses.field(repr=False)
    encrypt_with: str

    def __post_init__(self) -> None:
        if self.encrypt_with not in self.keys:
            raise ValueError(f"the encrypting key id {self.encrypt_with!r} is not in the key ring")
        for key_id, key in self.keys.items():
            if len(key) != KEY_BYTES:
                raise ValueError(f"codec key {key_id!r} is {len(key)} bytes, not {KEY_BYTES}")


def parse_key(text: str) -> bytes:
    """A key as configured: base64 of 32 random bytes (`openssl rand -base64 32`)."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        raise ValueError("is not base64: generate one with `openssl rand -base64 32`") from None
    if len(key) != KEY_BYTES:
        raise ValueError(
            f"is {len(key)} bytes, AES-256 needs {KEY_BYTES}: generate one with "
            "`openssl rand -base64 32`"
        )
    return key


class EncryptionCodec(PayloadCodec):
    """Seals payloads under the ring's encrypting key; opens them under the key they name.

    Without a ring it seals nothing and refuses, with a message saying what to set, to open a
    payload that is sealed: a process that lacks the keys says so instead of failing on an
    unknown encoding."""

    def __init__(self, ring: KeyRing | None) -> None:
        self._ring = ring
        self._ciphers = {k: AESGCM(v) for k, v in (ring.keys.items() if ring else ())}

    @property
    def encrypts(self) -> bool:
        return self._ring is not None

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.seal(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.open(p) for p in payloads]

    def seal(self, payload: Payload) -> Payload:
        if self._ring is None or payload.metadata.get("encoding") == ENCODING:
            return payload
        key_id = self._ring.encrypt_with
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(nonce, payload.SerializeToString(), key_id.encode())
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id.encode()},
            data=nonce + sealed,
        )

    def open(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # written before the codec, or sent plain by the UI or CLI
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadDecryptionError(_missing_key(key_id, self._ring))
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        try:
            plain = cipher.decrypt(nonce, sealed, key_id.encode())
        except InvalidTag:
            raise PayloadDecryptionError(
                f"a payload sealed under codec key {key_id!r} does not open with the key "
                "configured under that id: it was altered, or the id now names another key"
            ) from None
        return Payload.FromString(plain)


def _missing_key(key_id: str, ring: KeyRing | None) -> str:
    if ring is None:
        return (
            f"this payload is encrypted (codec key {key_id!r}) and this process has no codec "
            "keys: set REMEDIATE_CODEC_KEYS and REMEDIATE_CODEC_ENCRYPT_WITH as the worker has them"
        )
    return (
        f"this payload is encrypted under codec key {key_id!r}, which is not in "
        f"REMEDIATE_CODEC_KEYS (it has {', '.join(sorted(ring.keys))}): keep a rotated-out key "
        "in the ring while histories it sealed are still read"
    )


def data_converter(codec: EncryptionCodec) -> DataConverter:
    """The pydantic converter with the codec. With keys, failures (activity errors, which
    can name a target, and their stack traces) move into an encoded payload too, so they are
    sealed with the rest."""
    if not codec.encrypts:
        return dataclasses.replace(pydantic_data_converter, payload_codec=codec)
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
