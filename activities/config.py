"""The engine's configuration file: targets, approvers, runbook policies, notifications.

One TOML file, its path from `REMEDIATE_CONFIG`. Credentials appear here only as references
(`{ env = "NAME" }` or `{ secret_arn = "arn:..." }`); activities resolve them at call time.
"""

from __future__ import annotations

import os
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from activities.keys.config import GenericKeyProviderConfig
from activities.refs import SecretRef as SecretRef  # re-exported: the config schema names it
from activities.refs import StrictModel
from activities.senders_config import PagerDutyConfig, SilencesConfig, SlackAppConfig

CONFIG_ENV = "REMEDIATE_CONFIG"


class ConfigError(Exception):
    """The configuration is missing or wrong; the message says what to fix."""


class RestartHook(StrictModel):
    url: str
    token: SecretRef | None = None
    timeout_seconds: float = 30.0


class VercelDeploy(StrictModel):
    """A Vercel project's production deployments (REST API, bearer token)."""

    provider: Literal["vercel"]
    project: str  # project id (prj_...) or name
    team_id: str | None = None
    token: SecretRef
    api_url: str = "https://api.vercel.com"
    timeout_seconds: float = 30.0


class RailwayDeploy(StrictModel):
    """A Railway service in one environment (GraphQL API, bearer token)."""

    provider: Literal["railway"]
    service_id: str
    environment_id: str
    token: SecretRef
    api_url: str = "https://backboard.railway.com/graphql/v2"
    timeout_seconds: float = 30.0


class GenericDeploy(StrictModel):
    """Your own deploy tooling behind four HTTP endpoints (see activities/deploy/generic.py)."""

    provider: Literal["generic"]
    current_url: str
    list_url: str
    rollback_url: str
    restart_url: str | None = None
    token: SecretRef | None = None
    timeout_seconds: float = 30.0


DeployConfig = Annotated[
    VercelDeploy | RailwayDeploy | GenericDeploy, Field(discriminator="provider")
]


class AppFlagConfig(StrictModel):
    """An application's maintenance / read-only switch over HTTP (runbook 004's kill switch).

    `url` answers GET with `{"read_only": bool}` and takes PUT `{"read_only": bool}`;
    `write_probe_url`, if set, is POSTed to and must be refused (423/503) while read-only.
    """

    url: str
    token: SecretRef | None = None
    write_probe_url: str | None = None
    read_probe_url: str | None = None
    timeout_seconds: float = 10.0


class BackupsConfig(StrictModel):
    """Where a database target's backups live in S3 (runbook 000 "Restore from Backup").

    A backup is a `pg_dump -Fc` object under `prefix` whose name ends in `.dump`, with its
    SHA-256 in a manifest beside it (`<key>.json`: `{"sha256", "taken_at", "row_counts"}`, as
    the engine's own snapshots write it) or in the object's `sha256` metadata. The safety
    snapshot taken before a restore goes under `snapshot_prefix`.
    """

    bucket: str
    prefix: str = ""
    snapshot_prefix: str | None = None
    region: str | None = None

    def snapshots(self) -> str:
        return self.snapshot_prefix if self.snapshot_prefix is not None else f"{self.prefix}safety/"


class PostgresCredential(StrictModel):
    """A Postgres login whose password the secret holds (AWS's JSON shape: `{"engine",
    "host", "port", "dbname", "username", "password"}`; apps build their DSN from it).

    - `alternating_users` (zero downtime): two login roles with the same grants (e.g. both
      members of one group role). A rotation sets a new password on the role the secret does
      NOT name, switches the secret to it, restarts the consumers, and only then (second gate)
      revokes the old role's password. Nothing that holds the old credential fails meanwhile.
    - `single_user`: one role; its password changes in place, so connections the consumers
      open between the change and their restart fail. The plan says so.
    """

    type: Literal["postgres"]
    # A postgres target: its `dsn` (a role with CREATEROLE) runs ALTER ROLE.
    database: str
    strategy: Literal["alternating_users", "single_user"] = "alternating_users"
    users: list[str]

    @model_validator(mode="after")
    def _users_fit_strategy(self) -> PostgresCredential:
        wanted = 2 if self.strategy == "alternating_users" else 1
        if len(self.users) != wanted or len(set(self.users)) != wanted:
            raise ValueError(
                f"strategy {self.strategy!r} needs exactly {wanted} distinct login role(s) in "
                f"`users` (got {self.users})"
            )
        return self


class ApiKeyCredential(StrictModel):
    """A third-party API key whose value the secret holds as JSON `{"api_key", "key_id"}`."""

    type: Literal["api_key"]
    provider: GenericKeyProviderConfig


class CredentialConfig(StrictModel):
    """A credential target (`kind = "secret"`): a Secrets Manager secret, what it unlocks, and
    which targets use it (restarted or redeployed, through their `[restart]` hook or their
    `[deploy]` provider, to pick up a new value)."""

    secret_arn: str
    source: Annotated[PostgresCredential | ApiKeyCredential, Field(discriminator="type")]
    consumers: list[str] = Field(default_factory=list)

    def describe(self) -> str:
        if isinstance(self.source, PostgresCredential):
            return f"postgres login {' / '.join(self.source.users)} on {self.source.database}"
        return f"API key at {self.source.provider.describe()}"


class TargetConfig(StrictModel):
    kind: Literal["postgres", "mongodb", "http", "secret"]
    environment: str = "production"
    dsn: SecretRef | None = None
    health_url: str | None = None
    # More endpoints to probe when deciding "is it really down" and verifying a rollback.
    probe_urls: list[str] = Field(default_factory=list)
    # Prometheus-style text or JSON `{"error_rate": 0.01}`; see activities/probes.py.
    metrics_url: str | None = None
    restart: RestartHook | None = None
    deploy: DeployConfig | None = None
    app_flag: AppFlagConfig | None = None
    backups: BackupsConfig | None = None
    # kind = "secret": the credential the key_rotation runbook rotates.
    credential: CredentialConfig | None = None
    # Targets this one needs (web needs orders-db): while one of them is being remediated, or
    # just was, a runbook here waits and diagnoses again instead of acting on a symptom.
    depends_on: list[str] = Field(default_factory=list)

    def all_probe_urls(self) -> list[str]:
        urls = [self.health_url] if self.health_url else []
        return urls + [u for u in self.probe_urls if u not in urls]

    @model_validator(mode="after")
    def _database_needs_dsn(self) -> TargetConfig:
        if self.kind in ("postgres", "mongodb") and self.dsn is None:
            raise ValueError(f'a {self.kind} target needs `dsn = {{ env = "VAR" }}`')
        if (self.kind == "secret") != (self.credential is not None):
            raise ValueError(
                'a target of kind "secret" needs a [credential] section (secret_arn, source, '
                "consumers), and only such a target may have one"
            )
        return self


class Identity(StrictModel):
    """An approver or requester: who they are is proven by a token whose hash is stored, or
    by the team's identity provider ([oidc] identities maps a person to this identity)."""

    # None: this identity signs in only through the identity provider (no CLI token).
    token_sha256: str | None = None
    groups: list[str] = Field(default_factory=list)
    # Slack member id (U...) of this person: their button clicks decide as this identity.
    slack_user_id: str | None = None


def _default_verify_keys() -> list[str | SecretRef]:
    return [SecretRef(env="REMEDIATE_APPROVAL_VERIFY_KEY")]


class ApprovalsConfig(StrictModel):
    """Decisions are signed by the approval service alone (Ed25519) and verified by workers."""

    # The service's private key (PEM, or base64 of the 32-byte seed). Only the approval
    # service resolves it: a worker's environment needs none of it.
    signing_key: SecretRef = SecretRef(env="REMEDIATE_APPROVAL_SIGNING_KEY")
    # Public keys that verify decisions (base64 or PEM, inline or by reference). While a key
    # rotates, list the new one beside the old; a decision signed by a key no longer listed is
    # refused.
    verify_keys: list[str | SecretRef] = Field(default_factory=_default_verify_keys)
    max_decision_age_seconds: int = Field(default=900, ge=10)
    # How long a signed start (the requester's identity) is accepted after it was issued.
    start_token_ttl_seconds: int = Field(default=120, ge=10)


class AutoApproveConfig(StrictModel):
    name: str
    actions: list[str]
    max_affected: int
    max_share: float = 0.5
    targets: list[str] = Field(default_factory=list)
    # A plan that replaces the target as a whole (a rollback, a restore, read-only mode, a
    # rotation) or that cannot be undone passes unattended only where the policy says so too.
    allow_whole_target: bool = False
    allow_irreversible: bool = False


class GateConfig(StrictModel):
    required_group: str = "engineering-leads"
    required_group_by_environment: dict[str, str] = Field(default_factory=dict)
    four_eyes: bool = True
    # Distinct approvers a destructive plan needs (the requester never counts); a run whose
    # requester is not authenticated (started from the Temporal UI or the raw API) needs two.
    min_approvals: int = Field(default=1, ge=1)
    min_approvals_by_environment: dict[str, int] = Field(default_factory=dict)
    remind_after: timedelta = timedelta(minutes=10)
    abort_after: timedelta = timedelta(minutes=30)
    auto_approve: AutoApproveConfig | None = None
    # While the gate waits, the run diagnoses again this often; a plan the world has made
    # wrong (a lighter one is possible, or none is needed) is replaced by a new gate.
    refresh_after: timedelta = Field(default=timedelta(minutes=2), gt=timedelta(0))
    # An approved plan older than this (since it was made or last confirmed) is diagnosed
    # again before acting (e.g. after waiting for another run's lease).
    max_plan_age: timedelta = Field(default=timedelta(minutes=5), gt=timedelta(0))

    @model_validator(mode="after")
    def _abort_after_reminder(self) -> GateConfig:
        if self.abort_after <= self.remind_after:
            raise ValueError("gate `abort_after` must be longer than `remind_after`")
        return self


class PoolRestartConfig(StrictModel):
    usage_threshold: float = 0.8
    idle_older_than_seconds: int = 300
    terminate_batch_size: int = 50
    terminate_batch_pause_seconds: float = 0.0
    verify_consecutive: int = 3
    verify_interval_seconds: float = 5.0
    verify_deadline_seconds: float = 180.0
    gate: GateConfig = GateConfig()


class ReadOnlyConfig(StrictModel):
    """`read_only`: stop writes, hold, then restore them."""

    # How long a hold lasts before the run moves on to the exit gate by itself.
    hold_ttl: timedelta = timedelta(hours=2)
    # While holding, remind the channel this often that the target is still read-only.
    remind_every: timedelta = timedelta(minutes=30)
    verify_consecutive: int = 2
    verify_interval_seconds: float = 2.0
    verify_deadline_seconds: float = 60.0
    gate: GateConfig = GateConfig()

    @model_validator(mode="after")
    def _positive_times(self) -> ReadOnlyConfig:
        if self.hold_ttl.total_seconds() <= 0 or self.remind_every.total_seconds() <= 0:
            raise ValueError("read_only `hold_ttl` and `remind_every` must be positive")
        return self


class RollbackConfig(StrictModel):
    """`rollback`: is it really down, and what counts as restored."""

    # "Really down": this many probe rounds, `probe_interval_seconds` apart, over every
    # probe URL of the target; down only if at least `down_rounds` rounds failed, so a
    # service that flaps once is left alone.
    probe_rounds: int = 3
    probe_interval_seconds: float = 2.0
    down_rounds: int = 2
    probe_timeout_seconds: float = 5.0
    # How far back to look for the last known-good production deployment.
    history_limit: int = 50
    rollback_deadline_seconds: float = 300.0
    verify_consecutive: int = 3
    verify_interval_seconds: float = 2.0
    verify_deadline_seconds: float = 120.0
    # Optional: the target's metrics_url must report an error rate below this.
    max_error_rate: float | None = None
    # When verification fails after the rollback: promote the original release again.
    roll_forward_on_failure: bool = False
    # Roll back only an outage that follows a deploy: the release serving production must
    # have been created at most this long before the outage started (the alert's start, or
    # when the run found the target down).
    deploy_window_seconds: float = Field(default=7200.0, gt=0)
    gate: GateConfig = GateConfig()

    @model_validator(mode="after")
    def _rounds(self) -> RollbackConfig:
        if not 1 <= self.down_rounds <= self.probe_rounds:
            raise ValueError("rollback `down_rounds` must be between 1 and `probe_rounds`")
        return self


class SanityQuery(StrictModel):
    """A query that returns one number; a restored database must satisfy its bounds."""

    name: str
    sql: str
    min: float | None = None
    max: float | None = None


class BackupRestoreConfig(StrictModel):
    """`backup_restore`: what a restored database must show before and after the switch."""

    sanity_queries: list[SanityQuery] = Field(default_factory=list)
    # Where backups are downloaded and checked (kept per checksum, so a retry reuses it).
    work_dir: str | None = None
    # pg_dump / pg_restore; default: $PG_BIN or /usr/lib/postgresql/15/bin.
    pg_bin: str | None = None
    restore_jobs: int = 2
    # After a verified switch, drop the database the restore replaced (the safety snapshot
    # in S3 still holds it); false keeps it, renamed, for a person to drop.
    drop_previous_after_verify: bool = True
    # A worker that dies mid-step is noticed after this long; the step then resumes elsewhere.
    # The worker heartbeats the step whatever it waits on (workers/activity_keepalive.py), so
    # the default is every other step's (workflows/policies.py:HEARTBEAT_TIMEOUT).
    heartbeat_timeout_seconds: float = 10.0
    verify_consecutive: int = 2
    verify_interval_seconds: float = 2.0
    verify_deadline_seconds: float = 120.0
    gate: GateConfig = GateConfig()


class KeyRotationConfig(StrictModel):
    """`key_rotation`: how long consumers get to become healthy on the new credential."""

    verify_consecutive: int = 3
    verify_interval_seconds: float = 2.0
    verify_deadline_seconds: float = 120.0
    # Password length in bytes of randomness (URL-safe text, about 1.3 characters a byte).
    password_bytes: int = Field(default=32, ge=16, le=96)
    gate: GateConfig = GateConfig()


class RunbooksConfig(StrictModel):
    pool_restart: PoolRestartConfig = PoolRestartConfig()
    backup_restore: BackupRestoreConfig = BackupRestoreConfig()
    read_only: ReadOnlyConfig = ReadOnlyConfig()
    rollback: RollbackConfig = RollbackConfig()
    key_rotation: KeyRotationConfig = KeyRotationConfig()


class NotifyConfig(StrictModel):
    webhook_url: str | None = None
    webhook_token: SecretRef | None = None
    # A Slack incoming webhook URL is itself a credential, so it is a reference too.
    slack_webhook: SecretRef | None = None
    # Or a Slack app (bot token): gate messages updated once decided, progress in threads.
    slack_app: SlackAppConfig | None = None

    @model_validator(mode="after")
    def _one_slack(self) -> NotifyConfig:
        if self.slack_webhook is not None and self.slack_app is not None:
            raise ValueError(
                "[notify] has both slack_webhook and [notify.slack_app]: keep one (the app "
                "can update gate messages and thread a run's progress; the webhook cannot)"
            )
        return self


class IntakeConfig(StrictModel):
    """Credentials of the alert senders. Lists, so a new secret can be added before the old
    one is retired (rotation)."""

    alertmanager_tokens: list[SecretRef] = Field(default_factory=list)
    grafana_secrets: list[SecretRef] = Field(default_factory=list)
    # Grafana lets you name both headers; the signature's is Grafana's default. The timestamp
    # header is optional in Grafana; once named here (we suggest X-Grafana-Alerting-Timestamp),
    # every request must carry a recent one, which stops a captured request's replay.
    grafana_signature_header: str = "X-Grafana-Alerting-Signature"
    grafana_timestamp_header: str | None = None
    pagerduty_secrets: list[SecretRef] = Field(default_factory=list)
    generic_secrets: list[SecretRef] = Field(default_factory=list)
    # Slack app signing secrets: interaction callbacks (approval buttons) are verified with them.
    slack_signing_secrets: list[SecretRef] = Field(default_factory=list)
    timestamp_tolerance_seconds: int = 300


class CodecServerConfig(StrictModel):
    """Who may read decoded payloads through the service's codec endpoint (the Temporal UI's
    and CLI's codec server, `workers/codec_routes.py`). The keys themselves are process
    settings (REMEDIATE_CODEC_KEYS), since the CLI and replayer need them without this file."""

    # Identities in any of these groups may decode (and encode); nobody may when empty.
    decode_groups: list[str] = Field(default_factory=list)
    # Origins of the Temporal UI allowed to call the endpoint from a browser, exactly as the
    # browser sends them (scheme://host:port): e.g. "http://127.0.0.1:8233".
    ui_origins: list[str] = Field(default_factory=list)
    # How long a browser session cookie (POST /session) lasts.
    session_ttl_seconds: int = Field(default=3600, ge=60, le=86400)


class PagesConfig(StrictModel):
    """Where people reach the service's pages: every notification links to the gate's or the
    run's page (`activities/links.py`), and the sign-in's redirect URI is built on it."""

    # The service's address as a person's browser reaches it (scheme://host[:port], no
    # trailing slash), e.g. "https://remediate.example.com". Unset: notifications carry no
    # links, and single sign-on cannot work (the identity provider needs a fixed redirect URI).
    public_url: str | None = None
    # How long a sign-in to the pages lasts; after it the page sends the person to sign in
    # again (short: a lost phone or a shared screen keeps the power to approve this long).
    session_ttl_seconds: int = Field(default=8 * 3600, ge=60, le=7 * 86400)

    @field_validator("public_url")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("https://", "http://")):
            raise ValueError("pages.public_url must start with https:// (or http://)")
        return value.rstrip("/")


class OidcConfig(StrictModel):
    """Single sign-on to the pages with the team's identity provider (OpenID Connect,
    authorization code with PKCE; `workers/oidc.py`). The ID token's `identity_claim` (the
    e-mail by default) names a configured identity through `identities`; its `groups_claim`
    adds the engine groups `groups` maps the provider's groups to. Someone the mapping does
    not name cannot sign in; a provider group the mapping does not name grants nothing."""

    # The provider's issuer exactly as its discovery document (and every ID token) says it,
    # e.g. "https://login.example.com/realms/ops" (its /.well-known/openid-configuration).
    issuer: str
    client_id: str
    client_secret: SecretRef
    scopes: list[str] = Field(default_factory=lambda: ["openid", "email", "profile"])
    identity_claim: Literal["email", "sub", "preferred_username"] = "email"
    groups_claim: str = "groups"
    # ID-token claim value -> configured identity, e.g. "bob@example.com" = "bob".
    identities: dict[str, str] = Field(default_factory=dict)
    # The provider's group -> the engine's group, e.g. "oncall-leads" = "engineering-leads".
    groups: dict[str, str] = Field(default_factory=dict)
    # What the sign-in page's button says.
    display_name: str = "single sign-on"
    timeout_seconds: float = Field(default=10.0, gt=0)

    @field_validator("issuer")
    @classmethod
    def _issuer_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("oidc.issuer must be the provider's URL (https://...)")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _openid_scope(self) -> OidcConfig:
        if "openid" not in self.scopes:
            raise ValueError('oidc.scopes must include "openid" (an ID token names the person)')
        return self


class RouteConfig(StrictModel):
    """Which alert starts which runbook on which target."""

    name: str
    runbook: str
    target: str
    source: Literal["alertmanager", "grafana", "pagerduty", "generic"] | None = None
    match: dict[str, str] = Field(default_factory=dict)
    match_re: dict[str, str] = Field(default_factory=dict)
    parameters: dict[str, str] = Field(default_factory=dict)
    close_gate_on_resolve: bool = True


class LimitsOverride(StrictModel):
    """`[[safety.override]]`: other limits for one target, one runbook, or one runbook on one
    target (the most specific override wins, field by field)."""

    target: str | None = None
    runbook: str | None = None
    cooldown_seconds: int | None = Field(default=None, ge=0)
    hourly_budget: int | None = Field(default=None, ge=0)
    lease_ttl_seconds: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _names_something(self) -> LimitsOverride:
        if self.target is None and self.runbook is None:
            raise ValueError("a [[safety.override]] needs `target`, `runbook` or both")
        return self

    def matches(self, target: str, runbook: str) -> bool:
        return self.target in (None, target) and self.runbook in (None, runbook)

    def specificity(self) -> int:
        return (self.target is not None) * 2 + (self.runbook is not None)


class SafetyLimits(StrictModel):
    """Per target and runbook: how often the engine may act on its own account."""

    cooldown_seconds: int = Field(default=600, ge=0)
    hourly_budget: int = Field(default=3, ge=0)
    # A run that died holding a target's lease frees it after this long.
    lease_ttl_seconds: int = Field(default=1800, ge=1)
    override: list[LimitsOverride] = Field(default_factory=list)
    # Anyone with an identity may pull the kill switch; only this group may release it.
    resume_group: str = "engineering-leads"
    # After a remediation on a target ends, runbooks on the targets that depend on it wait
    # this long for its effect to show before they diagnose again (at most an hour: the
    # envelope keeps an hour of actions).
    dependency_settle_seconds: int = Field(default=180, ge=0, le=3600)

    def for_run(self, target: str, runbook: str) -> SafetyLimits:
        """The limits that apply to `runbook` on `target` (without the overrides list)."""
        limits = self.model_copy(update={"override": []})
        matching = sorted(
            (o for o in self.override if o.matches(target, runbook)),
            key=LimitsOverride.specificity,
        )
        for override in matching:
            fields = ("cooldown_seconds", "hourly_budget", "lease_ttl_seconds")
            chosen = {f: getattr(override, f) for f in fields if getattr(override, f) is not None}
            limits = limits.model_copy(update=chosen)
        return limits


class EngineConfig(StrictModel):
    targets: dict[str, TargetConfig] = Field(default_factory=dict)
    identities: dict[str, Identity] = Field(default_factory=dict)
    approvals: ApprovalsConfig = ApprovalsConfig()
    runbooks: RunbooksConfig = RunbooksConfig()
    notify: NotifyConfig = NotifyConfig()
    intake: IntakeConfig = IntakeConfig()
    routes: list[RouteConfig] = Field(default_factory=list)
    safety: SafetyLimits = SafetyLimits()
    codec_server: CodecServerConfig = CodecServerConfig()
    pages: PagesConfig = PagesConfig()
    # Closing the loop with the senders (activities/senders_config.py); absent: off.
    pagerduty: PagerDutyConfig | None = None
    silences: SilencesConfig | None = None
    oidc: OidcConfig | None = None

    @model_validator(mode="after")
    def _oidc_maps_known_identities(self) -> EngineConfig:
        if self.oidc is None:
            return self
        for claim, identity in self.oidc.identities.items():
            if identity not in self.identities:
                raise ValueError(
                    f"oidc.identities maps {claim!r} to {identity!r}, which is no configured "
                    f"identity: add [identities.{identity}] or fix the name"
                )
        if self.pages.public_url is None:
            raise ValueError(
                "[oidc] needs [pages] public_url: the identity provider sends people back to "
                "<public_url>/ui/oidc/callback, which must be registered with it"
            )
        return self

    @model_validator(mode="after")
    def _routes_name_known_targets(self) -> EngineConfig:
        for name, target in self.targets.items():
            credential = target.credential
            if credential is None:
                continue
            source = credential.source
            if isinstance(source, PostgresCredential) and (
                source.database not in self.targets
                or self.targets[source.database].kind != "postgres"
            ):
                raise ValueError(
                    f"targets.{name}.credential.source.database {source.database!r} must name "
                    "a postgres target (its dsn changes the passwords)"
                )
            for consumer in credential.consumers:
                used = self.targets.get(consumer)
                if used is None or (used.restart is None and used.deploy is None):
                    raise ValueError(
                        f"targets.{name}.credential.consumers: {consumer!r} must name a target "
                        "with a [restart] hook or a [deploy] provider (so it can pick up a new "
                        "credential)"
                    )
        for route in self.routes:
            if route.target not in self.targets:
                raise ValueError(f"route {route.name!r} names unknown target {route.target!r}")
        runbooks = sorted(RunbooksConfig.model_fields)
        for override in self.safety.override:
            if override.target is not None and override.target not in self.targets:
                raise ValueError(
                    f"[[safety.override]] names unknown target {override.target!r}: add "
                    f"[targets.{override.target}] or fix the name"
                )
            if override.runbook is not None and override.runbook not in runbooks:
                raise ValueError(
                    f"[[safety.override]] names unknown runbook {override.runbook!r} (one of "
                    f"{', '.join(runbooks)})"
                )
        return self

    @model_validator(mode="after")
    def _dependencies_known_and_acyclic(self) -> EngineConfig:
        for name, target in self.targets.items():
            for needed in target.depends_on:
                if needed == name:
                    raise ValueError(f"targets.{name}.depends_on names {name!r} itself: remove it")
                if needed not in self.targets:
                    raise ValueError(
                        f"targets.{name}.depends_on names unknown target {needed!r}: add "
                        f"[targets.{needed}] or remove it from the list"
                    )
        cycle = _dependency_cycle({n: t.depends_on for n, t in self.targets.items()})
        if cycle:
            raise ValueError(
                f"targets depend on each other in a cycle ({' -> '.join(cycle)}): remove one "
                "of these depends_on entries"
            )
        return self

    def target(self, name: str) -> TargetConfig:
        try:
            return self.targets[name]
        except KeyError:
            known = ", ".join(sorted(self.targets)) or "none"
            raise UnknownTargetError(
                f"unknown target {name!r}: add it under [targets.{name}] (known: {known})"
            ) from None


class UnknownTargetError(ConfigError):
    pass


def _dependency_cycle(graph: dict[str, list[str]]) -> list[str]:
    """A cycle in `depends_on`, as the path that closes it (["a", "b", "a"]); [] if none."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str]:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return []
        for needed in graph.get(name, []):
            found = visit(needed, [*path, name])
            if found:
                return found
        done.add(name)
        return []

    for start in sorted(graph):
        found = visit(start, [])
        if found:
            return found
    return []


_cache: dict[tuple[str, float], EngineConfig] = {}


def config_path() -> Path:
    raw = os.environ.get(CONFIG_ENV)
    if not raw:
        raise ConfigError(f"set {CONFIG_ENV} to the path of the engine's TOML config")
    return Path(raw)


def load_config(path: Path | None = None) -> EngineConfig:
    """Read and validate the config; cached until the file changes."""
    path = path or config_path()
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    key = (str(path), mtime)
    if key not in _cache:
        _cache.clear()
        _cache[key] = parse_config(path.read_text(), source=str(path))
    return _cache[key]


def _problem(loc: tuple[int | str, ...], message: str) -> str:
    """One validation error as a line: where (when it is a field) and what."""
    message = message.removeprefix("Value error, ")
    return f"{'.'.join(str(p) for p in loc)}: {message}" if loc else message


def parse_config(text: str, source: str = "<config>") -> EngineConfig:
    try:
        return EngineConfig.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source} is not valid TOML: {err}") from None
    except ValidationError as err:
        problems = "; ".join(_problem(e["loc"], e["msg"]) for e in err.errors())
        raise ConfigError(f"{source} is invalid: {problems}") from None
