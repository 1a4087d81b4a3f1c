"""The target registry: what a runbook may know about a target and the policy that governs it.

Returns names, kinds, flags and limits only; connection strings and tokens stay in the config
as references and are resolved by the activity that uses them.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.approval_auth import verify_keys
from activities.config import (
    ApprovalsConfig,
    BackupRestoreConfig,
    ConfigError,
    CredentialConfig,
    EngineConfig,
    GateConfig,
    KeyRotationConfig,
    PoolRestartConfig,
    PostgresCredential,
    ReadOnlyConfig,
    RollbackConfig,
    load_config,
)


class DescribeTargetInput(BaseModel):
    runbook: str
    target: str


class AutoApproveLimits(BaseModel):
    name: str
    actions: list[str]
    max_affected: int
    max_share: float
    allow_whole_target: bool = False
    allow_irreversible: bool = False


class GateSettings(BaseModel):
    required_group: str
    four_eyes: bool
    remind_after: timedelta
    abort_after: timedelta
    # None in settings from workers before plans were refreshed: no refresh.
    refresh_after: timedelta | None = None
    max_plan_age: timedelta | None = None
    auto_approve: AutoApproveLimits | None = None
    min_approvals: int = 1
    # Public keys (not secret) that verify signed decisions, so the gate checks them itself.
    verify_keys: list[str] = []
    max_decision_age_seconds: int = 900
    start_token_ttl_seconds: int = 120


class ConsumerDescription(BaseModel):
    """A target that uses a credential and how it picks up a new value."""

    name: str
    # "restart_hook" ([restart]) or "deploy" (its [deploy] provider's restart/redeploy).
    via: str
    probe_urls: list[str] = []


class CredentialDescription(BaseModel):
    secret_arn: str
    type: str
    # "alternating_users" / "single_user" (postgres) or "new_key" (API keys).
    strategy: str
    summary: str
    consumers: list[ConsumerDescription] = []
    # The postgres target whose logins it changes (None: a vendor's API key).
    database: str | None = None


class TargetDescription(BaseModel):
    target: str
    kind: str
    environment: str
    has_health_check: bool
    has_restart_hook: bool
    # The gate of the runbook that asked.
    gate: GateSettings
    # "vercel", "railway", "generic", or None without a [deploy] section.
    deploy_provider: str | None = None
    # Health endpoints probed for "is it down" and rollback verification (URLs, no secrets).
    probe_urls: list[str] = []
    has_metrics: bool = False
    # Read-only modes this target supports: "postgres" (database setting), "app_flag".
    read_only_modes: list[str] = []
    pool_restart: PoolRestartConfig = PoolRestartConfig()
    read_only: ReadOnlyConfig = ReadOnlyConfig()
    rollback: RollbackConfig = RollbackConfig()
    backup_restore: BackupRestoreConfig = BackupRestoreConfig()
    # `s3://bucket/prefix` of the target's backups, or None without a [backups] section.
    backups_at: str | None = None
    snapshots_at: str | None = None
    key_rotation: KeyRotationConfig = KeyRotationConfig()
    # kind = "secret": the credential and its consumers (no value, no token).
    credential: CredentialDescription | None = None
    # Targets this one depends on, and how long after a remediation on one of them ends a
    # runbook here waits before it diagnoses again.
    depends_on: list[str] = []
    dependency_settle_seconds: float = 180.0


def gate_settings(
    gate: GateConfig, target: str, environment: str, approvals: ApprovalsConfig
) -> GateSettings:
    auto = gate.auto_approve
    limits = None
    if auto is not None and (not auto.targets or target in auto.targets):
        limits = AutoApproveLimits(
            name=auto.name,
            actions=auto.actions,
            max_affected=auto.max_affected,
            max_share=auto.max_share,
            allow_whole_target=auto.allow_whole_target,
            allow_irreversible=auto.allow_irreversible,
        )
    return GateSettings(
        required_group=gate.required_group_by_environment.get(environment, gate.required_group),
        four_eyes=gate.four_eyes,
        remind_after=gate.remind_after,
        abort_after=gate.abort_after,
        refresh_after=gate.refresh_after,
        max_plan_age=gate.max_plan_age,
        auto_approve=limits,
        min_approvals=gate.min_approvals_by_environment.get(environment, gate.min_approvals),
        verify_keys=verify_keys(approvals),
        max_decision_age_seconds=approvals.max_decision_age_seconds,
        start_token_ttl_seconds=approvals.start_token_ttl_seconds,
    )


@activity.defn
async def describe_target(params: DescribeTargetInput) -> TargetDescription:
    try:
        config = load_config()
        target = config.target(params.target)
    except ConfigError as err:
        # Bad input (unknown target, broken config) will not fix itself by retrying.
        raise ApplicationError(str(err), type="ConfigError", non_retryable=True) from None
    runbooks = config.runbooks
    gates = {
        "pool_restart": runbooks.pool_restart.gate,
        "read_only": runbooks.read_only.gate,
        "rollback": runbooks.rollback.gate,
        "backup_restore": runbooks.backup_restore.gate,
        "key_rotation": runbooks.key_rotation.gate,
    }
    if params.runbook not in gates:
        raise ApplicationError(
            f"unknown runbook {params.runbook!r} (known: {', '.join(sorted(gates))})",
            type="ConfigError",
            non_retryable=True,
        )
    modes = (["postgres"] if target.kind == "postgres" else []) + (
        ["app_flag"] if target.app_flag is not None else []
    )
    backups = target.backups
    # Each runbook's own policy travels without its gate: the gate is `gate` above.
    no_gate = {"gate": GateConfig()}
    return TargetDescription(
        target=params.target,
        kind=target.kind,
        environment=target.environment,
        has_health_check=target.health_url is not None,
        has_restart_hook=target.restart is not None,
        gate=gate_settings(
            gates[params.runbook], params.target, target.environment, config.approvals
        ),
        deploy_provider=target.deploy.provider if target.deploy is not None else None,
        probe_urls=target.all_probe_urls(),
        has_metrics=target.metrics_url is not None,
        read_only_modes=modes,
        pool_restart=runbooks.pool_restart.model_copy(update=no_gate),
        read_only=runbooks.read_only.model_copy(update=no_gate),
        rollback=runbooks.rollback.model_copy(update=no_gate),
        backup_restore=runbooks.backup_restore.model_copy(update=no_gate),
        backups_at=f"s3://{backups.bucket}/{backups.prefix}" if backups else None,
        snapshots_at=f"s3://{backups.bucket}/{backups.snapshots()}" if backups else None,
        key_rotation=runbooks.key_rotation.model_copy(update=no_gate),
        credential=_credential(config, target.credential),
        depends_on=target.depends_on,
        dependency_settle_seconds=config.safety.dependency_settle_seconds,
    )


def _credential(
    config: EngineConfig, credential: CredentialConfig | None
) -> CredentialDescription | None:
    if credential is None:
        return None
    source = credential.source
    consumers = []
    for name in credential.consumers:
        used = config.target(name)
        consumers.append(
            ConsumerDescription(
                name=name,
                via="restart_hook" if used.restart is not None else "deploy",
                probe_urls=used.all_probe_urls(),
            )
        )
    return CredentialDescription(
        secret_arn=credential.secret_arn,
        type=source.type,
        strategy=source.strategy if isinstance(source, PostgresCredential) else "new_key",
        summary=credential.describe(),
        consumers=consumers,
        database=source.database if isinstance(source, PostgresCredential) else None,
    )
