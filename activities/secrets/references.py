"""Resolve secret references at call time, inside activities only.

The value never leaves the activity: it is not returned, logged, or put in an error message.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Any

import boto3

from activities.config import ConfigError, SecretRef


class SecretUnavailableError(ConfigError):
    """A referenced secret could not be read; the message names the reference, not the value."""


@lru_cache(maxsize=1)
def secretsmanager_client() -> Any:
    # boto3 honours AWS_ENDPOINT_URL, so the same code talks to AWS or the local emulator.
    return boto3.client("secretsmanager")


def resolve_secret(ref: SecretRef) -> str:
    if ref.env is not None:
        value = os.environ.get(ref.env)
        if not value:
            raise SecretUnavailableError(
                f"environment variable {ref.env} is not set for the worker; export it there"
            )
        return value
    try:
        # AWSCURRENT is AWS's default, named because moto's server does not honour it.
        response = secretsmanager_client().get_secret_value(
            SecretId=ref.secret_arn, VersionStage="AWSCURRENT"
        )
    except Exception as err:
        raise SecretUnavailableError(
            f"cannot read {ref.describe()} from Secrets Manager: {type(err).__name__}"
        ) from None
    value = str(response.get("SecretString", ""))
    if ref.json_key is None:
        return value
    try:
        return str(json.loads(value)[ref.json_key])
    except (ValueError, KeyError):
        raise SecretUnavailableError(
            f"{ref.describe()} is not JSON with the key {ref.json_key!r}"
        ) from None
