"""Runbook: restore a Postgres database from a backup in S3 (runbook 000 "Restore from Backup
(Safest)", 001 "test backup restore", "back up before migrations").

1. The target's backups in S3; the newest taken before `before` (the corruption time), or the
   one named by `backup`. None: escalate.
2. Check it before anyone is asked: checksum against its manifest, `pg_restore --list`.
3. Stop writes: the read_only runbook as a child (`phase=enter`, its own gate).
4. Safety snapshot of the live database to S3 (streamed `pg_dump -Fc`, with checksum and row
   counts), so the restore itself can be undone.
5. Plan: the backup, its age, the data-loss window, sizes, row counts; gate.
6. Restore into a scratch database (resumable), validate it (row counts against the backup's
   manifest, not empty, sanity queries), switch it in with two renames in one transaction.
   The replaced database is kept until the run is verified.
7. Verify (counts and sanity queries on the live name, app health); then drop the replaced
   database, exit read-only (child, `phase=exit`, its own gate) and report the data-loss
   window and the snapshot. Failed verification: switch back, escalate, stay read-only.

Cancelled: a restored database not yet verified is switched back, a half-restored scratch
database is dropped, and the target STAYS read-only (its data is the reason for the restore):
the run pages with the command that restores writes through the read_only exit gate.

Parameters: `before` (ISO 8601, UTC if no offset), `backup` (a key or file name).
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    from activities.checks import CheckSpec
    from activities.postgres.backups import check_backup, find_backups, snapshot_database
    from activities.postgres.models import (
        BackupCheck,
        CheckBackupInput,
        DatabaseNames,
        DropInput,
        FindBackupsInput,
        RestoreInput,
        Snapshot,
        SnapshotInput,
        SwitchInput,
        ValidateInput,
        Validation,
    )
    from activities.postgres.restore import (
        drop_replaced,
        restore_to_scratch,
        switch_back,
        switch_in_restored,
        validate_database,
    )
    from activities.storage.models import BackupInfo
    from activities.targets import TargetDescription
    from workflows.models import (
        DecisionOutcome,
        Effect,
        ExpectedImpact,
        Plan,
        RunbookInput,
        RunReport,
        RunStatus,
    )
    from workflows.names import BACKUP_RESTORE
    from workflows.policies import (
        ACT_RETRY,
        HEARTBEAT_TIMEOUT,
        LONG_TIMEOUT,
        MAX_REPLANS,
        READ_RETRY,
        STEP_TIMEOUT,
    )
    from workflows.read_only import ReadOnlyWorkflow
    from workflows.runbook import BadInputError, RunbookWorkflow
    from workflows.target_lease import KillSwitchStop

# Long steps retry after a worker dies (the heartbeat timeout notices) and resume; a step
# that fails for a reason of its own (a corrupt backup, a name taken) does not retry.
LONG_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
    non_retryable_error_types=["ConfigError", "BackupUnverifiable", "BackupCorrupt"],
)


@workflow.defn(name="BackupRestoreWorkflow")
class BackupRestoreWorkflow(RunbookWorkflow):
    runbook = BACKUP_RESTORE

    @workflow.init
    def __init__(self, params: RunbookInput) -> None:
        super().__init__(params)
        self.read_only = False
        self.switched = False
        # Set once the restore starts: what a cancellation has to clean up.
        self.names: DatabaseNames | None = None
        # The backup asked for (`before`, `backup`), for a plan made again.
        self.choice: tuple[datetime | None, str | None] = (None, None)

    @workflow.run
    async def run(self, params: RunbookInput) -> RunReport:
        self.start()
        self.mark("triggered", workflow.info().start_time)
        try:
            before = self._before(params.parameters.get("before"))
            target = await self.describe_target()
            if target.kind != "postgres":
                raise BadInputError(
                    f"target {target.target!r} is {target.kind}; backup_restore restores "
                    "Postgres targets (MongoDB restore is not built yet)"
                )
            if target.backups_at is None:
                raise BadInputError(
                    f"target {target.target!r} has no [targets.{target.target}.backups] "
                    "with the S3 bucket and prefix of its backups"
                )
            return await self._restore(target, before, params.parameters.get("backup"))
        except asyncio.CancelledError:
            await self._clean_up_after_cancel()
            raise
        except BadInputError as err:
            return await self.finish(RunStatus.ABORTED, f"bad input: {err}")
        except KillSwitchStop as stop:
            return await self.stopped(stop, self._state().strip() + self._exit_hint())
        except (ActivityError, ChildWorkflowError) as err:
            if is_cancelled_exception(err):  # cancelled while an activity or child ran
                await self._clean_up_after_cancel()
                raise
            return await self.step_failed(err, "backup_restore step failed", "." + self._state())

    @staticmethod
    def _before(value: str | None) -> datetime | None:
        if not value:
            return None
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise BadInputError(
                f"parameter before={value!r} is not an ISO 8601 time (e.g. 2026-11-23T03:00:00Z)"
            ) from None
        return when if when.tzinfo else when.replace(tzinfo=UTC)

    def _state(self) -> str:
        names = self.names
        still = " THE TARGET IS STILL READ-ONLY." if self.read_only else ""
        if self.switched and "verified" in self.timeline and names is not None:
            return (
                " The live database is the restored one (verified); the replaced one is kept "
                f"as {names.previous}.{still}"
            )
        if self.switched:
            return " The live database may be the restored one; the replaced one is kept."
        kept = (
            f" The live database was not touched; the restored copy is kept as {names.scratch}."
            if names is not None and "restored" in self.timeline
            else ""
        )
        return kept + still if self.read_only else kept or " Nothing was changed."

    def _exit_hint(self) -> str:
        if not self.read_only:
            return ""
        return (
            " Writes come back through the read-only exit gate: remediate start read_only "
            f"--target {self.params.target} --param phase=exit --param mode=postgres"
        )

    async def _restore(
        self, target: TargetDescription, before: datetime | None, name: str | None
    ) -> RunReport:
        self.choice = (before, name)
        self.set_status(RunStatus.DIAGNOSING, f"Looking for backups of {target.target}")
        choice = await workflow.execute_activity(
            find_backups,
            FindBackupsInput(target=target.target, before=before, name=name),
            start_to_close_timeout=STEP_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=READ_RETRY,
        )
        if choice.chosen is None:
            return await self.escalate(
                f"no backup to restore {target.target} from: {choice.why_none} "
                f"({choice.examined} examined); not guessing.{self._state()}"
            )
        backup = choice.chosen
        self.audit.record("diagnosis", f"chosen {backup.describe()}", backup=backup.url)
        check = await workflow.execute_activity(
            check_backup,
            CheckBackupInput(target=target.target, backup=backup),
            start_to_close_timeout=LONG_TIMEOUT,
            heartbeat_timeout=self._heartbeat(target),
            retry_policy=LONG_RETRY,
        )
        self.audit.record(
            "diagnosis",
            f"backup checked: SHA-256 matches, {check.toc_entries} archive entries, "
            f"{len(check.tables)} tables",
        )
        entered = await self._read_only("enter", target)
        if entered.status != RunStatus.REMEDIATED:
            return await self.finish(
                entered.status,
                f"read-only mode was not entered ({entered.summary}); nothing restored",
            )
        self.read_only = True
        self.mark("writes_stopped")
        snapshot = await self._snapshot(target)
        names = self._names(snapshot.database)
        plan = self._plan(target, backup, check, snapshot, names)
        decision = await self.approve_plan(plan)
        if decision.outcome != DecisionOutcome.APPROVED:
            # Nothing was restored; writes come back through the read-only exit gate.
            await self._exit_read_only(target, "the restore was not approved")
            return await self.not_approved(decision.outcome, plan)
        self.mark("approved")
        return await self._act(target, backup, snapshot, names)

    async def _act(
        self,
        target: TargetDescription,
        backup: BackupInfo,
        snapshot: Snapshot,
        names: DatabaseNames,
    ) -> RunReport:
        run = self._run_marker()
        self.names = names
        self.set_status(RunStatus.ACTING, f"Restoring {backup.url} into {names.scratch}")
        restored = await workflow.execute_activity(
            restore_to_scratch,
            RestoreInput(target=target.target, backup=backup, names=names, run=run),
            start_to_close_timeout=LONG_TIMEOUT,
            heartbeat_timeout=self._heartbeat(target),
            retry_policy=LONG_RETRY,
        )
        self.audit.record(
            "action",
            f"restored into {names.scratch} in {restored.seconds:.1f}s"
            + (
                f"; resumed, {len(restored.resumed_tables)} tables kept from an earlier attempt"
                if restored.resumed_tables
                else ""
            ),
            result=restored.model_dump(mode="json"),
        )
        self.mark("restored")
        scratch = await self._validate(target, names.scratch, backup.row_counts)
        if not scratch.passed:
            return await self.escalate(
                f"the restored copy {names.scratch} failed validation "
                f"({'; '.join(scratch.problems)}); the live database was not touched."
                + self._state()
            )
        await self.guard("switching the restored database in")
        try:
            switched = await workflow.execute_activity(
                switch_in_restored,
                SwitchInput(
                    target=target.target,
                    names=names,
                    run=run,
                    live_oid=snapshot.database_oid,
                    live_read_only=self.read_only,
                ),
                start_to_close_timeout=STEP_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=ACT_RETRY,
            )
        except ActivityError as err:
            cause = err.cause
            drift = isinstance(cause, ApplicationError) and cause.type == "PlanDrift"
            if not drift or self.replans >= MAX_REPLANS:
                raise
            # The live database is not the one snapshotted, or took writes since: the plan
            # no longer holds. Plan again from a new snapshot (the restored copy is reused);
            # the new plan needs a new decision.
            self.replans += 1
            self.audit.record("plan_drift", f"{cause}; not switching; planning again")
            await self.release_lease()
            self.timeline.pop("writes_stopped", None)  # the data-loss window starts anew
            return await self._restore(target, *self.choice)
        self.switched = True
        self.mark("switched")
        self.audit.record("action", switched.detail, sessions_ended=switched.sessions_ended)
        if not await self._verified(target, names.live, scratch.row_counts):
            back = await workflow.execute_activity(
                switch_back,
                SwitchInput(target=target.target, names=names, run=run),
                start_to_close_timeout=STEP_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=ACT_RETRY,
            )
            self.switched = False
            self.audit.record("compensation", back.detail)
            return await self.escalate(
                f"{target.target}: the restored database failed verification; switched back "
                f"({back.detail}).{self._state()}"
            )
        self.mark("verified")
        if target.backup_restore.drop_previous_after_verify:
            await self.guard(f"dropping the replaced database {names.previous}")
            await workflow.execute_activity(
                drop_replaced,
                DropInput(target=target.target, database=names.previous, run=run),
                start_to_close_timeout=STEP_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=ACT_RETRY,
            )
            self.audit.record(
                "action", f"dropped the replaced database {names.previous} (snapshot kept)"
            )
        await self.release_lease()
        exited = await self._exit_read_only(target, "the restore is verified")
        stopped = self.timeline.get("writes_stopped", workflow.now())
        window = stopped - backup.taken_at
        summary = (
            f"restored {names.live} from {backup.url}; data-loss window {_span(window)}: "
            f"writes between {backup.taken_at:%Y-%m-%d %H:%M:%S} and "
            f"{stopped:%Y-%m-%d %H:%M:%S} UTC are not in it (they are in the safety snapshot "
            f"{snapshot.url})"
        )
        if not exited:
            return await self.escalate(summary + "; WRITES ARE STILL OFF: the read-only exit "
                                       "did not complete")  # fmt: skip
        return await self.finish(RunStatus.REMEDIATED, summary)

    async def _clean_up_after_cancel(self) -> None:
        """Leave no half-done restore behind; keep writes off and say how to restore them."""
        names, run, done = self.names, self._run_marker(), []
        try:
            if names is not None and self.switched and "verified" not in self.timeline:
                back = await workflow.execute_activity(
                    switch_back,
                    SwitchInput(target=self.params.target, names=names, run=run),
                    start_to_close_timeout=STEP_TIMEOUT,
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=ACT_RETRY,
                )
                self.switched = False
                done.append(back.detail)
            if names is not None and not self.switched:
                dropped = await workflow.execute_activity(
                    drop_replaced,
                    DropInput(
                        target=self.params.target, database=names.scratch, run=run, role="scratch"
                    ),
                    start_to_close_timeout=STEP_TIMEOUT,
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=ACT_RETRY,
                )
                if dropped:
                    done.append(f"dropped the half-restored {names.scratch}")
        except ActivityError as err:
            done.append(f"clean-up FAILED ({err.cause}); look at the databases by hand")
        summary = "cancelled" + "".join(f"; {d}" for d in done) + "." + self._state()
        summary += self._exit_hint()
        await self.cancelled(summary, "page" if self.read_only else "warning")

    async def _read_only(self, phase: str, target: TargetDescription) -> RunReport:
        info = workflow.info()
        return await workflow.execute_child_workflow(
            ReadOnlyWorkflow.run,
            RunbookInput(
                target=target.target,
                requested_by=self.params.requested_by,
                reason=f"backup_restore {info.workflow_id}: {phase} read-only",
                parameters={"phase": phase, "mode": "postgres"},
                dry_run=self.params.dry_run,
                # The child's gates trust the requester as far as this run does.
                parent_verified=bool(self.gate.requester_verified),
            ),
            id=f"{info.workflow_id}-read-only-{phase}"
            + (f"-{self.replans}" if self.replans else ""),
        )

    async def _exit_read_only(self, target: TargetDescription, why: str) -> bool:
        self.set_status(RunStatus.ACTING, f"{why}; asking to exit read-only")
        exited = await self._read_only("exit", target)
        self.audit.record("read_only_exit", exited.summary, status=exited.status.value)
        if exited.status == RunStatus.REMEDIATED:
            self.read_only = False
            return True
        return False

    async def _snapshot(self, target: TargetDescription) -> Snapshot:
        self.set_status(RunStatus.ACTING, f"Safety snapshot of {target.target}")
        snapshot = await workflow.execute_activity(
            snapshot_database,
            SnapshotInput(
                target=target.target,
                label=f"pre-restore-{self._token()}" + (f"-{self.replans}" if self.replans else ""),
            ),
            start_to_close_timeout=LONG_TIMEOUT,
            heartbeat_timeout=self._heartbeat(target),
            retry_policy=LONG_RETRY,
        )
        self.audit.record(
            "snapshot",
            f"safety snapshot {snapshot.url} ({snapshot.size / 1e6:.1f} MB, "
            f"{sum(snapshot.row_counts.values())} rows)",
            sha256=snapshot.sha256,
        )
        return snapshot

    async def _validate(
        self, target: TargetDescription, database: str, expected: dict[str, int] | None
    ) -> Validation:
        result = await workflow.execute_activity(
            validate_database,
            ValidateInput(target=target.target, database=database, expected_counts=expected),
            start_to_close_timeout=LONG_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=READ_RETRY,
        )
        self.audit.record(
            "validation" if result.passed else "validation_failed",
            f"{database}: {result.total_rows} rows in {len(result.row_counts)} tables"
            + (f"; {'; '.join(result.problems)}" if result.problems else "; as expected"),
            sanity=result.sanity,
        )
        return result

    async def _verified(self, target: TargetDescription, live: str, counts: dict[str, int]) -> bool:
        after = await self._validate(target, live, counts)
        if not after.passed:
            return False
        if not target.probe_urls:
            return True
        config = target.backup_restore
        checks = [
            CheckSpec(kind="url_healthy", target=target.target, url=u) for u in target.probe_urls
        ]
        verified = await self.verify(checks, config)
        return verified.passed

    @staticmethod
    def _heartbeat(target: TargetDescription) -> timedelta:
        return timedelta(seconds=target.backup_restore.heartbeat_timeout_seconds)

    def _token(self) -> str:
        return hashlib.sha256(self._run_marker().encode()).hexdigest()[:8]

    def _run_marker(self) -> str:
        info = workflow.info()
        return f"{info.workflow_id}/{info.run_id}"

    def _names(self, live: str) -> DatabaseNames:
        token, stem = self._token(), live[:40]
        return DatabaseNames(
            live=live,
            scratch=f"{stem}_restore_{token}",
            previous=f"{stem}_replaced_{token}",
            failed=f"{stem}_failed_{token}",
        )

    def _plan(
        self,
        target: TargetDescription,
        backup: BackupInfo,
        check: BackupCheck,
        snapshot: Snapshot,
        names: DatabaseNames,
    ) -> Plan:
        loss = snapshot.taken_at - backup.taken_at
        expected = backup.row_counts
        drops = target.backup_restore.drop_previous_after_verify
        effects = [
            Effect(
                what=f"create {names.scratch} and restore {backup.url} into it",
                undoable=True,
                undo=f"drop {names.scratch} (done if the run is cancelled)",
            ),
            Effect(
                what=f"end the sessions on {names.live}; rename it {names.previous} and "
                f"{names.scratch} to {names.live} (one transaction): the last {_span(loss)} "
                f"of writes leave the live database (kept in {snapshot.url})",
                undoable=True,
                undo="switch back (done automatically if verification fails); ended "
                "sessions reconnect",
            ),
        ]
        if drops:
            effects.append(
                Effect(
                    what=f"after verification, DROP DATABASE {names.previous} WITH (FORCE); "
                    f"its data stays only in the safety snapshot {snapshot.url}",
                    undoable=False,
                )
            )
        # Plans of runs recorded before plans listed their effects do not name the drop either.
        listed = self.effects(*effects)
        return Plan(
            runbook=self.runbook,
            action="restore_database",
            target=target.target,
            parameters={
                "backup": backup.url,
                "backup_taken_at": backup.taken_at.isoformat(),
                "backup_sha256": backup.sha256,
                "backup_bytes": backup.size,
                "data_loss_window_seconds": round(loss.total_seconds()),
                "tables": check.tables,
                "expected_row_counts": expected,
                "current_row_counts": snapshot.row_counts,
                "safety_snapshot": snapshot.url,
                "databases": names.model_dump(),
                "statements": [
                    f'CREATE DATABASE "{names.scratch}"; pg_restore into it; validate',
                    f'ALTER DATABASE "{names.live}" RENAME TO "{names.previous}"',
                    f'ALTER DATABASE "{names.scratch}" RENAME TO "{names.live}"',
                    "(both renames in one transaction)",
                    *(
                        [f'after verification: DROP DATABASE "{names.previous}" WITH (FORCE)']
                        if drops and listed
                        else []
                    ),
                ],
            },
            expected_impact=ExpectedImpact(
                summary=f"replace {names.live} ({sum(snapshot.row_counts.values())} rows now) "
                f"with {backup.describe()}"
                + (f" ({sum(expected.values())} rows)" if expected else "")
                + f": writes of the last {_span(loss)} are lost (kept in {snapshot.url})",
                affected=len(check.tables),
                reversible=True,
                whole_target=True,
                effects=listed,
            ),
        )


def _span(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"
