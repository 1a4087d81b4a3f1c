"""Bad config says what to fix; secret references resolve from env or Secrets Manager (moto's
server, a real HTTP endpoint); signed decisions are checked for signature, key, binding and age."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from pydantic import ValidationError

from activities import decision_tokens
from activities.config import ConfigError, EngineConfig, SecretRef, parse_config
from activities.decision_tokens import Audience
from activities.links import gate_page_url, run_page_url
from activities.secrets import references as secrets


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


WEB_AND_DB = """
[targets.web]
kind = "http"
depends_on = {web}
[targets.orders-db]
kind = "http"
depends_on = {db}
"""


@pytest.mark.parametrize(
    ("web", "db", "message"),
    [
        ('["orders-dB"]', "[]", "targets.web.depends_on names unknown target 'orders-dB': add"),
        ('["web"]', "[]", "targets.web.depends_on names 'web' itself: remove it"),
        (
            '["orders-db"]',
            '["web"]',
            "targets depend on each other in a cycle (orders-db -> web -> orders-db): remove one",
        ),
    ],
)
def test_bad_dependencies_say_what_to_fix(web: str, db: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(WEB_AND_DB.format(web=web, db=db), source="engine.toml")
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_longer_dependency_cycle_is_named_and_a_chain_is_fine() -> None:
    chain = "[targets.a]\nkind='http'\ndepends_on=['b']\n[targets.b]\nkind='http'\n"
    assert parse_config(chain).targets["a"].depends_on == ["b"]
    cycle = chain.replace(
        "[targets.b]\nkind='http'\n",
        "[targets.b]\nkind='http'\ndepends_on=['c']\n[targets.c]\nkind='http'\ndepends_on=['a']\n",
    )
    with pytest.raises(ConfigError, match=r"cycle \(a -> b -> c -> a\)"):
        parse_config(cycle)


def test_the_example_config_has_web_depend_on_its_database() -> None:
    example = Path(__file__).parents[1] / "infra/config/example.toml"
    config = parse_config(example.read_text())
    assert config.targets["web"].depends_on == ["orders-db"]
    assert config.safety.dependency_settle_seconds > 0


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


class TestDecisionTokens:
    """The signed-decision format on its own: pure computation, no servers."""

    private = decision_tokens.new_private_key_text()
    public = decision_tokens.public_text(decision_tokens.private_key(private))
    now = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
    age = timedelta(minutes=15)

    def token(self, key: str | None = None, issued: datetime | None = None) -> str:
        return decision_tokens.issue(
            decision_tokens.private_key(key or self.private),
            audience="gate", kind="approve", subject="bob", groups=["engineering-leads"],
            workflow_id="wf", run_id="run-1", gate=1, plan_id="p1",
            now=issued or self.now, ttl=self.age,
        )  # fmt: skip

    def check(self, token: str, keys: list[str] | None = None, audience: Audience = "gate") -> str:
        try:
            claims = decision_tokens.verify(
                token, keys or [self.public], audience=audience, now=self.now, max_age=self.age
            )
        except decision_tokens.TokenRefusedError as err:
            return str(err)
        return f"ok {claims.sub} {claims.wid}/{claims.rid} gate {claims.gate} {claims.plan}"

    def test_a_fresh_signed_decision_is_authentic_and_bound(self) -> None:
        assert self.check(self.token()) == "ok bob wf/run-1 gate 1 p1"

    def test_stale_and_future_decisions_are_refused(self) -> None:
        assert "expired" in self.check(self.token(issued=self.now - timedelta(minutes=16)))
        assert "future" in self.check(self.token(issued=self.now + timedelta(minutes=5)))

    def test_each_altered_claim_breaks_the_signature(self) -> None:
        head, body, signature = self.token().split(".")
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        for field, value in [("sub", "carol"), ("rid", "run-2"), ("gate", 2), ("plan", "p2"),
                             ("kind", "reject"), ("wid", "other"), ("exp", claims["exp"] + 9),
                             ("groups", ["engineering-leads", "admins"])]:  # fmt: skip
            altered = base64.urlsafe_b64encode(json.dumps({**claims, field: value}).encode())
            forged = f"{head}.{altered.decode().rstrip('=')}.{signature}"
            assert "forged or altered" in self.check(forged), field

    def test_a_key_that_is_not_configured_is_refused_and_rotation_works(self) -> None:
        new_private = decision_tokens.new_private_key_text()
        new_public = decision_tokens.public_text(decision_tokens.private_key(new_private))
        assert "not a configured verify key" in self.check(self.token(key=new_private))
        # While rotating, both keys verify; once the old one is removed, its tokens are refused.
        both = [self.public, new_public]
        assert self.check(self.token(), both).startswith("ok")
        assert self.check(self.token(key=new_private), both).startswith("ok")
        assert "not a configured verify key" in self.check(self.token(), [new_public])

    def test_a_token_for_another_audience_is_refused(self) -> None:
        assert "not start" in self.check(self.token(), audience="start")

    def test_garbage_is_refused_with_a_reason(self) -> None:
        for junk in ("", "x", "a.b.c", "\u00e9.\u00e9.\u00e9", self.token()[:-1]):
            assert not self.check(junk).startswith("ok"), junk


def test_page_links_follow_the_public_url_and_are_absent_without_it() -> None:

    config = EngineConfig.model_validate({"pages": {"public_url": "https://r.example.com/"}})
    assert gate_page_url(config, "pool_restart-orders db") == (
        "https://r.example.com/ui/gates/pool_restart-orders%20db"
    )
    assert run_page_url(config, "rollback-web") == "https://r.example.com/ui/runs/rollback-web"
    assert gate_page_url(EngineConfig(), "rollback-web") is None
    with pytest.raises(ValidationError, match="must start with https://"):
        EngineConfig.model_validate({"pages": {"public_url": "r.example.com"}})
