"""Secrets Manager's rotation protocol against moto's server: pending version by client
request token, finish moves AWSCURRENT, put back restores the previous, every step idempotent."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from activities.secrets import protocol as rp


@pytest.fixture
def client(moto_endpoint: str) -> Iterator[Any]:
    yield boto3.client(
        "secretsmanager",
        endpoint_url=moto_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


@pytest.fixture
def arn(client: Any) -> str:
    created = client.create_secret(Name=f"app/db-{uuid.uuid4().hex[:6]}", SecretString="old-pw")
    return str(created["ARN"])


def test_a_rotation_makes_the_new_version_current_and_keeps_the_old_as_previous(
    client: Any, arn: str
) -> None:
    before = rp.versions(client, arn)
    token = str(uuid.uuid4())
    rp.put_pending(client, arn, token, "new-pw")
    rp.put_pending(client, arn, token, "ignored: the same token is the same version")
    assert rp.value_of(client, arn, version_id=token) == "new-pw"
    assert rp.value_of(client, arn) == "old-pw", "current until finished"
    state = rp.finish(client, arn, token)
    assert (state.current, state.previous, state.pending) == (token, before.current, None)
    assert rp.finish(client, arn, token) == state, "finishing twice changes nothing"
    assert rp.value_of(client, arn) == "new-pw"
    assert len(client.list_secret_version_ids(SecretId=arn)["Versions"]) == 2


def test_put_back_previous_restores_the_old_value_once(client: Any, arn: str) -> None:
    before = rp.versions(client, arn)
    token = str(uuid.uuid4())
    rp.put_pending(client, arn, token, "new-pw")
    rp.finish(client, arn, token)
    state = rp.put_back_previous(client, arn, token)
    assert state.current == before.current
    assert rp.value_of(client, arn) == "old-pw"
    assert rp.put_back_previous(client, arn, token) == state


def test_finishing_a_token_that_was_never_stored_is_refused(client: Any, arn: str) -> None:
    with pytest.raises(Exception, match="no version"):
        rp.finish(client, arn, str(uuid.uuid4()))
    assert rp.value_of(client, arn) == "old-pw"
