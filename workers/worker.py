"""The Temporal worker: runs every runbook workflow and every activity."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.alertmanager.silences import create_silence, expire_silence, extend_silence
from activities.approval_auth import authenticate_decision, verify_keys
from activities.checks import verify_until_stable
from activities.config import ConfigError, EngineConfig, load_config
from activities.deploy.releases import find_deployments, restart_service, rollback_deployment
from activities.deploy.restart_hook import restart_app
from activities.http.app_flag import app_read_only_state, check_app_writes, set_app_read_only
from activities.http.probes import assess_down, probe_health
from activities.mongo.connections import get_mongo_connection_usage
from activities.notify.incident_record import post_incident_record
from activities.notify.send import notify
from activities.pagerduty.incidents import resolve_incident
from activities.postgres.backups import check_backup, find_backups, snapshot_database
from activities.postgres.read_only import (
    check_writes,
    pg_read_only_state,
    set_database_read_only,
)
from activities.postgres.restore import (
    drop_replaced,
    restore_to_scratch,
    switch_back,
    switch_in_restored,
    validate_database,
)
from activities.postgres.sessions import (
    find_idle_sessions,
    get_connection_usage,
    terminate_sessions,
)
from activities.postgres.snapshots import plan_snapshot, snapshot_replaced, verify_snapshot
from activities.safety import SafetyActivities
from activities.secrets.rotation import (
    audit_credential,
    create_pending_version,
    finish_rotation,
    inspect_credential,
    restore_previous_version,
    revoke_credential_version,
    set_pending_on_target,
    test_credential_version,
)
from activities.targets import describe_target
from workers import logs
from workers.activity_keepalive import KeepAlive
from workers.exits import exit_now, fail
from workers.settings import (
    DEFAULT_MAX_CACHED_WORKFLOWS,
    Settings,
    connect,
    load_settings,
    metrics_runtime,
)
from workers.temporal_config import TemporalConfigError
from workflows.backup_restore import BackupRestoreWorkflow
from workflows.key_rotation import KeyRotationWorkflow
from workflows.pool_restart import PoolRestartWorkflow
from workflows.read_only import ReadOnlyWorkflow
from workflows.rollback import RollbackWorkflow
from workflows.safety_envelope import SafetyEnvelopeWorkflow

WORKFLOWS: Sequence[type] = (
    BackupRestoreWorkflow,
    KeyRotationWorkflow,
    PoolRestartWorkflow,
    ReadOnlyWorkflow,
    RollbackWorkflow,
    SafetyEnvelopeWorkflow,
)
ACTIVITIES: Sequence[Callable[..., Any]] = (
    app_read_only_state,
    assess_down,
    check_backup,
    drop_replaced,
    find_backups,
    plan_snapshot,
    restore_to_scratch,
    snapshot_database,
    snapshot_replaced,
    switch_back,
    switch_in_restored,
    validate_database,
    verify_snapshot,
    authenticate_decision,
    audit_credential,
    create_pending_version,
    finish_rotation,
    inspect_credential,
    restore_previous_version,
    revoke_credential_version,
    set_pending_on_target,
    test_credential_version,
    check_app_writes,
    check_writes,
    create_silence,
    expire_silence,
    extend_silence,
    resolve_incident,
    describe_target,
    find_deployments,
    find_idle_sessions,
    get_connection_usage,
    get_mongo_connection_usage,
    notify,
    pg_read_only_state,
    post_incident_record,
    probe_health,
    restart_app,
    restart_service,
    rollback_deployment,
    set_app_read_only,
    set_database_read_only,
    terminate_sessions,
    verify_until_stable,
)


def activities_for(client: Client) -> list[Callable[..., Any]]:
    """Every activity, including those that need the worker's Temporal client."""
    safety = SafetyActivities(client)
    return [
        *ACTIVITIES,
        safety.safety_status,
        safety.acquire_lease,
        safety.release_lease,
        safety.check_in,
        safety.open_runs,
        safety.safety_policy,
    ]


# Gates and the envelope verify signed decisions inside the workflow sandbox. The signature
# library is native code that imports its own Python modules when it raises (an invalid
# signature); through the sandbox's importer that aborts the process, so both libraries are
# passed through: they are deterministic and hold no state between calls.
WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("cryptography", "jwt")
)


# How long the SDK may hold back an activity's heartbeat (by default 80% of its heartbeat
# timeout). Short, so that details an activity heartbeats reach the server within a second
# (a retry reads them) although the keep-alive's heartbeats came first, and so that a busy
# worker can miss several keep-alive beats before a live attempt is taken for dead.
HEARTBEAT_THROTTLE = timedelta(seconds=1)
# How long a run's next workflow task waits for the worker that has the run cached before
# any worker may take it (SDK default 10 s). A worker that died still has runs cached, the
# safety envelope among them, whose lease updates every acting run waits on; the server
# stops sending tasks to a dead worker's queue only once it has not polled for 10 s.
STICKY_TIMEOUT = timedelta(seconds=5)


def build_worker(
    client: Client,
    task_queue: str,
    drain: timedelta = timedelta(seconds=30),
    max_cached_workflows: int = DEFAULT_MAX_CACHED_WORKFLOWS,
) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=activities_for(client),
        workflow_runner=WORKFLOW_RUNNER,
        graceful_shutdown_timeout=drain,
        # A worker that dies is noticed within its activities' heartbeat timeout
        # (workflows/policies.py): every activity with one is heartbeated as it runs.
        interceptors=[KeepAlive()],
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
        max_cached_workflows=max_cached_workflows,
    )


def _remember_verify_keys(config: EngineConfig) -> None:
    """Read the approval verify keys now, so that gates on this worker can tell a decision
    signed with a key added since their run began from a forgery (activities/known_keys.py).
    Not fatal here: every run reads them again, and says what is wrong with them."""
    try:
        verify_keys(config.approvals)
    except ConfigError as err:
        logging.warning("approval verify keys not read at start-up: %s", err)


async def run(settings: Settings) -> None:
    # Fail at start-up, with the config's own message, not at the first alert.
    _remember_verify_keys(load_config())
    client = await connect(settings, metrics_runtime(settings))
    drain = timedelta(seconds=settings.worker_drain_seconds)
    worker = build_worker(client, settings.task_queue, drain, settings.worker_max_cached_workflows)
    # On SIGTERM/SIGINT stop polling and let running activities finish within the drain
    # time; then those left are cancelled and handed back to be retried elsewhere, instead
    # of waiting out their timeouts as they would after a crash.
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(worker.shutdown()))
    logging.info(
        "worker %s polling %s on %s (drain %ss on SIGTERM)",
        client.identity, settings.task_queue, client.service_client.config.target_host,
        settings.worker_drain_seconds,
    )  # fmt: skip
    await worker.run()
    logging.info("worker %s stopped", client.identity)


def main() -> None:
    settings = load_settings()
    logs.configure(settings.log_format)
    try:
        asyncio.run(run(settings))
    except TemporalConfigError as err:  # one line saying what to fix, not the transport's chain
        fail(str(err))
    exit_now(0)  # stopped and drained (see workers/exits.py)


if __name__ == "__main__":
    main()
