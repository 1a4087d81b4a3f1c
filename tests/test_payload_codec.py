"""The payload codec on its own: sealing, key rotation, what passes through, what is refused
and how, and the key configuration's one-line errors. The codec against a real Temporal, its
endpoint and the UI: tests/test_encrypted_history.py."""

from __future__ import annotations

import base64
import json
import os

import pytest
from pydantic import BaseModel, ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.exceptions import ApplicationError

from activities.refs import SecretRef
from tests.support import codec_converter, codec_keys
from workers.codec_keys import CodecKeyError, key_ring
from workers.payload_codec import (
    ENCODING,
    KEY_ID_METADATA,
    EncryptionCodec,
    PayloadDecryptionError,
)
from workers.settings import Settings, payload_codec
from workers.temporal_config import TemporalConfigError


class Diagnosis(BaseModel):
    target: str
    summary: str


SECRET_TEXT = Diagnosis(target="orders-db", summary="terminate 40 sessions on db.internal:5432")


async def test_a_sealed_payload_names_its_key_and_holds_no_plain_text() -> None:
    converter = codec_converter("test-k1")
    [sealed] = await converter.encode([SECRET_TEXT])
    assert sealed.metadata["encoding"] == ENCODING
    assert sealed.metadata[KEY_ID_METADATA] == b"test-k1"
    assert b"db.internal" not in sealed.SerializeToString()
    assert b"orders-db" not in sealed.SerializeToString()
    assert await converter.decode([sealed], [Diagnosis]) == [SECRET_TEXT]


async def test_after_rotation_old_payloads_still_open_and_new_ones_use_the_new_key() -> None:
    [old] = await codec_converter("test-k1").encode([SECRET_TEXT])
    rotated = codec_converter("test-k1", "test-k2", encrypt_with="test-k2")
    assert await rotated.decode([old], [Diagnosis]) == [SECRET_TEXT]
    [new] = await rotated.encode([SECRET_TEXT])
    assert new.metadata[KEY_ID_METADATA] == b"test-k2"
    # Once k1 is dropped from the ring, what it sealed is refused, saying which key it needs.
    with pytest.raises(PayloadDecryptionError, match=r"'test-k1'.*REMEDIATE_CODEC_KEYS"):
        await codec_converter("test-k2").decode([old], [Diagnosis])


async def test_plain_payloads_pass_through_so_older_histories_still_read() -> None:
    [plain] = await codec_converter().encode([SECRET_TEXT])
    assert plain.metadata["encoding"] == b"json/plain"
    assert await codec_converter("test-k1").decode([plain], [Diagnosis]) == [SECRET_TEXT]


async def test_a_process_without_keys_says_what_to_set_for_an_encrypted_payload() -> None:
    [sealed] = await codec_converter("test-k1").encode([SECRET_TEXT])
    with pytest.raises(PayloadDecryptionError, match="no codec keys: set REMEDIATE_CODEC_KEYS"):
        await codec_converter().decode([sealed], [Diagnosis])


async def test_an_altered_payload_is_refused() -> None:
    codec = EncryptionCodec(key_ring(codec_keys("test-k1"), "test-k1"))
    [sealed] = await codec.encode([Payload(metadata={"encoding": b"json/plain"}, data=b"{}")])
    flipped = bytes([sealed.data[-1] ^ 1])
    altered = Payload(metadata=dict(sealed.metadata), data=sealed.data[:-1] + flipped)
    with pytest.raises(PayloadDecryptionError, match="altered"):
        await codec.decode([altered])


async def test_failure_messages_and_stack_traces_are_sealed_too() -> None:
    converter = codec_converter("test-k1")
    failure = Failure()
    await converter.encode_failure(ApplicationError("cannot reach db.internal:5432"), failure)
    assert failure.message == "Encoded failure"
    assert b"db.internal" not in failure.SerializeToString()
    decoded = await converter.decode_failure(failure)
    assert "db.internal:5432" in str(decoded)


def test_keys_configured_as_references_in_the_environment() -> None:
    codec_keys("test-k1", "test-k2")
    refs = {"old": {"env": "REMEDIATE_TEST_CODEC_K1"}, "next": {"env": "REMEDIATE_TEST_CODEC_K2"}}
    os.environ["REMEDIATE_CODEC_KEYS"] = json.dumps(refs)
    os.environ["REMEDIATE_CODEC_ENCRYPT_WITH"] = "next"
    try:
        assert payload_codec(Settings()).encrypts
    finally:
        del os.environ["REMEDIATE_CODEC_KEYS"], os.environ["REMEDIATE_CODEC_ENCRYPT_WITH"]
    assert not payload_codec(Settings()).encrypts


@pytest.mark.parametrize(
    ("value", "encrypt_with", "message"),
    [
        (None, "k", "environment variable REMEDIATE_TEST_CODEC_BAD is not set"),
        ("not base64!", "k", "'k' \\(env:REMEDIATE_TEST_CODEC_BAD\\) is not base64"),
        (base64.b64encode(b"short").decode(), "k", "is 5 bytes, AES-256 needs 32"),
        (base64.b64encode(bytes(32)).decode(), None, "set REMEDIATE_CODEC_ENCRYPT_WITH"),
        (base64.b64encode(bytes(32)).decode(), "k9", "k9 is not a key id in"),
    ],
)
def test_a_key_that_cannot_be_used_is_one_line_saying_what_to_fix(
    value: str | None, encrypt_with: str | None, message: str
) -> None:
    os.environ.pop("REMEDIATE_TEST_CODEC_BAD", None)
    if value is not None:
        os.environ["REMEDIATE_TEST_CODEC_BAD"] = value
    with pytest.raises(CodecKeyError, match=message) as raised:
        key_ring({"k": SecretRef(env="REMEDIATE_TEST_CODEC_BAD")}, encrypt_with)
    assert isinstance(raised.value, TemporalConfigError)  # entry points print it as one line
    assert "\n" not in str(raised.value)
    if value:
        assert value not in str(raised.value)


def test_keys_that_are_not_json_are_a_settings_error_saying_the_shape() -> None:
    os.environ["REMEDIATE_CODEC_KEYS"] = "k1=env:CODEC_K1"
    try:
        with pytest.raises(ValidationError, match=r"codec_keys\n.*must be JSON"):
            Settings()
    finally:
        del os.environ["REMEDIATE_CODEC_KEYS"]
