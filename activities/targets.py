"""The target registry: what a runbook may know about a target and the policy that governs it.

Returns names, kinds, flags and limits only; connection strings and tokens stay in the config
as references and are resolved by the activity that uses them.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.config import ConfigError, GateConfig, PoolRestartConfig, load_config


class DescribeTargetInput(BaseModel):
    runbook: str
    target: str


class AutoApproveLimits(BaseModel):
    name: str
    actions: list[str]
    max_affected: int
    max_share: float


class GateSettings(BaseModel):
    required_group: str
    four_eyes: bool
    remind_after: timedelta
    abort_after: timedelta
    auto_approve: AutoApproveLimits | None = None


class TargetDescription(BaseModel):
    target: str
    kind: str
    environment: str
    has_health_check: bool
    has_restart_hook: bool
    gate: GateSettings
    pool_restart: PoolRestartConfig


def gate_settings(gate: GateConfig, target: str, environment: str) -> GateSettings:
    auto = gate.auto_approve
    limits = None
    if auto is not None and (not auto.targets or target in auto.targets):
        limits = AutoApproveLimits(
            name=auto.name,
            actions=auto.actions,
            max_affected=auto.max_affected,
            max_share=auto.max_share,
        )
    return GateSettings(
        required_group=gate.required_group_by_environment.get(environment, gate.required_group),
        four_eyes=gate.four_eyes,
        remind_after=gate.remind_after,
        abort_after=gate.abort_after,
        auto_approve=limits,
    )


@activity.defn
async def describe_target(params: DescribeTargetInput) -> TargetDescription:
    try:
        config = load_config()
        target = config.target(params.target)
    except ConfigError as err:
        # Bad input (unknown target, broken config) will not fix itself by retrying.
        raise ApplicationError(str(err), type="ConfigError", non_retryable=True) from None
    runbook = config.runbooks.pool_restart
    return TargetDescription(
        target=params.target,
        kind=target.kind,
        environment=target.environment,
        has_health_check=target.health_url is not None,
        has_restart_hook=target.restart is not None,
        gate=gate_settings(runbook.gate, params.target, target.environment),
        pool_restart=runbook.model_copy(update={"gate": GateConfig()}),
    )
