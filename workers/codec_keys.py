"""The payload codec's key ring, from the process settings: references resolved at start-up.

    REMEDIATE_CODEC_KEYS='{"k2": {"secret_arn": "arn:...:codec-k2"}, "k1": {"env": "CODEC_K1"}}'
    REMEDIATE_CODEC_ENCRYPT_WITH=k2

Each key is a secret reference (`activities/refs.py`) to base64 of 32 random bytes. They are
process settings, not the engine's TOML, because every process that talks to Temporal needs
them, the CLI and replayer included, and those do not read the engine's config.
"""

from __future__ import annotations

from activities.config import ConfigError, SecretRef
from activities.secrets.references import resolve_secret
from workers.payload_codec import EncryptionCodec, KeyRing, parse_key
from workers.temporal_config import TemporalConfigError

KEYS_ENV = "REMEDIATE_CODEC_KEYS"
ENCRYPT_WITH_ENV = "REMEDIATE_CODEC_ENCRYPT_WITH"


class CodecKeyError(TemporalConfigError):
    """The codec's keys are configured wrong or cannot be read; the message says what to fix.
    A `TemporalConfigError`, so every entry point reports it as one line before connecting."""


def key_ring(keys: dict[str, SecretRef], encrypt_with: str | None) -> KeyRing | None:
    """The resolved ring; None when no keys are configured (payloads stay plain)."""
    if not keys:
        if encrypt_with:
            raise CodecKeyError(f"{ENCRYPT_WITH_ENV} is set but {KEYS_ENV} names no keys")
        return None
    if not encrypt_with:
        raise CodecKeyError(
            f"{KEYS_ENV} is set: set {ENCRYPT_WITH_ENV} to the id of the key that encrypts "
            f"(one of {', '.join(sorted(keys))})"
        )
    if encrypt_with not in keys:
        raise CodecKeyError(
            f"{ENCRYPT_WITH_ENV}={encrypt_with} is not a key id in {KEYS_ENV} "
            f"({', '.join(sorted(keys))})"
        )
    return KeyRing({key_id: _resolve(key_id, ref) for key_id, ref in keys.items()}, encrypt_with)


def codec_for(keys: dict[str, SecretRef], encrypt_with: str | None) -> EncryptionCodec:
    return EncryptionCodec(key_ring(keys, encrypt_with))


def _resolve(key_id: str, ref: SecretRef) -> bytes:
    try:
        return parse_key(resolve_secret(ref))
    except ConfigError as err:  # not set, or Secrets Manager refused: its message says which
        raise CodecKeyError(f"codec key {key_id!r}: {err}") from None
    except ValueError as err:
        raise CodecKeyError(f"codec key {key_id!r} ({ref.describe()}) {err}") from None
