"""Bad config says what to fix; secret references resolve from env or Secrets Manager (moto's
server, a real HTTP endpoint); decisions are checked for signature, identity and age."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest

from activities.approval_auth import (
    AuthenticationInput,
    DecisionRequest,
    check_decision,
    sign_decision,
)
from activities.config import ConfigError, SecretRef, parse_config
from activities.secrets import references as secrets
from tests.support import identities_toml


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[targets.db]\nkind = 'postgres'\n", "a postgres target needs `dsn"),
        ("[targets.db]\nkind = 'oracle'\n", "targets.db.kind"),
        ("[targets.db]\nkind = 'postgres'\ndsn = 'postgres://u:p@h/db'\n", "targets.db.dsn"),
        ("[targets.db]\nkind='http'\ndsn = { env = 'A', secret_arn = 'B' }\n", "exactly one"),
        ("[runbooks.pool_restart.gate]\nremind_after = 600\nabort_after = 60\n", "abort_after"),
        ("[runbooks.pool_restart]\nusage_treshold = 0.8\n", "usage_treshold"),
        ("targets = [", "not valid TOML"),
    ],
)
def test_bad_config_says_what_to_fix(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(text, source="engine.toml")
    assert message in str(error.value)
    assert str(error.value).startswith("engine.toml")


def test_unknown_target_names_the_known_ones() -> None:
    config = parse_config("[targets.orders-db]\nkind = 'http'\n")
    with pytest.raises(ConfigError, match=r"unknown target 'ordes-db'.*known: orders-db"):
        config.target("ordes-db")


def test_env_secret_missing_names_the_variable_not_a_value() -> None:
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE is not set"):
        secrets.resolve_secret(SecretRef(env="NOT_SET_ANYWHERE"))


def test_secret_arn_resolves_through_secrets_manager(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    secrets.secretsmanager_client.cache_clear()
    client = boto3.client("secretsmanager")
    arn = client.create_secret(
        Name="orders-db-dsn", SecretString='{"dsn": "postgresql://u:s3cret@h/db"}'
    )["ARN"]
    ref = SecretRef(secret_arn=arn, json_key="dsn")
    assert secrets.resolve_secret(ref) == "postgresql://u:s3cret@h/db"
    with pytest.raises(ConfigError) as missing:
        secrets.resolve_secret(SecretRef(secret_arn=arn + "-gone"))
    assert "s3cret" not in str(missing.value)
    secrets.secretsmanager_client.cache_clear()


class TestDecisionChecks:
    key = "signing-key-for-unit-tests"
    config = parse_config(identities_toml())
    now = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)

    def check(self, request: DecisionRequest, workflow_id: str = "wf") -> str:
        result = check_decision(
            self.config,
            self.key,
            AuthenticationInput(workflow_id=workflow_id, kind="approve", request=request),
            self.now,
        )
        return "ok" if result.authenticated else result.reason

    def signed(self, approver: str = "bob", age: timedelta = timedelta()) -> DecisionRequest:
        request = DecisionRequest(plan_id="p1", approver=approver, issued_at=self.now - age)
        return sign_decision(self.key, "wf", "approve", request)

    def test_a_fresh_signed_decision_is_authentic(self) -> None:
        assert self.check(self.signed()) == "ok"

    def test_stale_and_future_decisions_are_refused(self) -> None:
        assert "stale" in self.check(self.signed(age=timedelta(minutes=16)))
        assert "stale" in self.check(self.signed(age=-timedelta(minutes=5)))

    def test_altered_fields_break_the_signature(self) -> None:
        altered = self.signed().model_copy(update={"approver": "carol"})
        assert "forged or altered" in self.check(altered)
        assert "forged or altered" in self.check(self.signed(), workflow_id="other")

    def test_signed_for_an_unknown_identity_is_refused(self) -> None:
        assert "not a configured identity" in self.check(self.signed(approver="eve"))
