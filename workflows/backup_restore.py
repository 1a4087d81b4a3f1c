"""Runbook: restore a Postgres database from a backup in S3 (runbook 000 "Restore from Backup
(Safest)", 001 "test backup restore", "back up before migrations").

1. The target's backups in S3; the newest taken before `before` (the corruption time), or the
   one named by `backup`. None: escalate.
2. Check it (checksum against its manifest, `pg_restore --list`) WHILE writes are stopped:
   the read_only runbook as a child (`phase=enter`, its own gate). A backup that fails its
   check cancels the child (writes stay on, or its cancel path puts them back); one that
   fails after writes are off leaves through the read-only exit gate. Nothing is restored.
3. With writes off: the live database's oid and row counts (`plan_snapshot`), and where its
   safety snapshot will go.
4. Plan: the backup, its age, the data-loss window, sizes, row counts, the snapshot; gate.
5. Restore into a scratch database (resumable), validate it (row counts against the backup's
   manifest, not empty, sanity queries), and, if the live database is still the planned one
   and still read-only, switch it in with two renames in one transaction.
6. At once: ship the safety snapshot of the replaced database (renamed aside, unchanged since
   writes stopped) to S3, and verify the live database (counts, sanity queries, app health).
7. The snapshot read back from S3 and checked; only then drop the replaced database, exit
   read-only (child, `phase=exit`, its own gate) and report the data-loss window and the
   snapshot. Failed verification: stop the snapshot, switch back, escalate, stay read-only. A
   snapshot that cannot be stored or verified: the replaced database is kept (never dropped),
   writes come back through the exit gate, and the run escalates naming the kept database.

Why the snapshot may wait until after the switch (the same safety as taking it first): from
the moment writes are off until the run ends, the data the restore replaces is always whole
in at least one restorable place. Before the switch it is the live database, read-only; the
switch refuses (`PlanDrift`) unless the live database is still the planned oid and still
read-only, so nothing it holds is newer than the plan; the switch only renames it (every
byte stays), and that renamed database is dropped only after its snapshot is in S3, read
back with the checksum computed while streaming (`drop_replaced` checks the object again,
and refuses without it). Runs recorded before this (`OVERLAP_PATCH`) replay the old order:
check, then read-only, then the snapshot streamed before the plan.

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
from temporalio.workflow import ActivityCancellationType, ActivityHandle

with workflow.unsafe.imports_passed_through():
    from activities.checks import CheckSpec
    from activities.postgres.backups import check_backup, find_backups, snapshot_database
    from activities.postgres.models import (
        BackupCheck,
        CheckBackupInput,
        DatabaseNames,
        DropInput,
        FindBackupsInput,
        PlannedSnapshot,
        PlanSnapshotInput,
        RestoreInput,
        Snapshot,
        SnapshotInput,
        SnapshotReplacedInput,
        SwitchInput,
        ValidateInput,
        Validation,
        VerifySnapshotInput,
    )
    from activities.postgres.restore import (
        drop_replaced,
        restore_to_scratch,
        switch_back,
        switch_in_restored,
        validate_database,
    )
    from activities.postgres.snapshots import plan_snapshot, snapshot_replaced, verify_snapshot
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

# Runs recorded before the restore overlapped its steps (backup checked while read-only is
# entered; the snapshot shipped from the replaced database after the switch) replay without.
OVERLAP_PATCH = "restore-overlap-v1"
# Runs recorded before writes came back ahead of the safety snapshot's shipping (they exited
# read-only only after the snapshot was stored and the replaced database dropped).
WRITES_BACK_PATCH = "restore-writes-back-early-v1"

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
        # OVERLAP_PATCH: the safety snapshot being shipped from the replaced database, and
        # why it could not be, if it could not.
        self.overlap = False
        self.shipping: ActivityHandle[Snapshot] | None = None
        self.snapshot_failure = ""

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
        self.overlap = workflow.patched(OVERLAP_PATCH)
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
        if self.overlap:
            check, entered = await self._check_while_entering(target, backup)
        else:
            check = await self._check(target, backup)
            entered = await self._read_only("enter", target)
        if check is None or entered.status != RunStatus.REMEDIATED:
            return await self.finish(
                entered.status,
                f"read-only mode was not entered ({entered.summary}); nothing restored",
            )
        self.read_only = True
        self.mark("writes_stopped")
        snapshot = await (self._plan_snapshot(target) if self.overlap else self._snapshot(target))
        names = self._names(snapshot.database)
        plan = self._plan(target, backup, check, snapshot, names)
        decision = await self.approve_plan(plan)
        if decision.outcome != DecisionOutcome.APPROVED:
            # Nothing was restored; writes come back through the read-only exit gate.
            await self._exit_read_only(target, "the restore was not approved")
            return await self.not_approved(decision.outcome, plan)
        self.mark("approved")
        return await self._act(target, backup, snapshot, names)

    async def _check(self, target: TargetDescription, backup: BackupInfo) -> BackupCheck:
        check = await workflow.execute_activity(
            check_backup,
            CheckBackupInput(target=target.target, backup=backup),
            start_to_close_timeout=LONG_TIMEOUT,
            heartbeat_timeout=self._heartbeat(target),
            retry_policy=LONG_RETRY,
        )
        self._checked(check)
        return check

    def _checked(self, check: BackupCheck) -> None:
        self.audit.record(
            "diagnosis",
            f"backup checked: SHA-256 matches, {check.toc_entries} archive entries, "
            f"{len(check.tables)} tables",
        )

    async def _check_while_entering(
        self, target: TargetDescription, backup: BackupInfo
    ) -> tuple[BackupCheck | None, RunReport]:
        """Download and check the backup while the read-only child stops writes (its gate may
        wait for a person meanwhile). The check is None when writes were not stopped. A
        backup that fails its check does not leave the target read-only for nothing: a child
        still running is cancelled (it puts writes back if it had stopped them), and writes
        stopped already come back through the exit gate; the check's error then ends the run."""
        checking = workflow.start_activity(
            check_backup,
            CheckBackupInput(target=target.target, backup=backup),
            start_to_close_timeout=LONG_TIMEOUT,
            heartbeat_timeout=self._heartbeat(target),
            retry_policy=LONG_RETRY,
        )
        entering = asyncio.ensure_future(self._read_only("enter", target))
        try:
            await workflow.wait([checking, entering], return_when=asyncio.FIRST_EXCEPTION)
            failed = checking.exception() if checking.done() else None
            if failed is not None:
                await self._back_out_of_read_only(target, entering)
                raise failed
            entered = await entering
            if entered.status != RunStatus.REMEDIATED:
                return None, entered
            try:
                check = await checking
            except ActivityError:
                await self._back_out_of_read_only(target, entering)
                raise
        finally:
            for pending in (checking, entering):
                if not pending.done():
                    pending.cancel()
        self._checked(check)
        return check, entered

    async def _back_out_of_read_only(
        self, target: TargetDescription, entering: asyncio.Future[RunReport]
    ) -> None:
        """The backup failed its check while (or after) the read-only child ran."""
        if not entering.done():
            entering.cancel()
            await asyncio.gather(entering, return_exceptions=True)
            self.audit.record("read_only_enter", "cancelled: the backup failed its check")
            return
        if entering.exception() is None and entering.result().status == RunStatus.REMEDIATED:
            self.read_only = True
            await self._exit_read_only(target, "the backup failed its check")

    async def _act(
        self,
        target: TargetDescription,
        backup: BackupInfo,
        snapshot: PlannedSnapshot,
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
        if self.overlap:
            self.shipping = self._ship_snapshot(target, names, run, snapshot)
        if not await self._verified(target, names.live, scratch.row_counts):
            await self._stop_shipping()
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
        if self.overlap and workflow.patched(WRITES_BACK_PATCH):
            return await self._after_verified(target, backup, snapshot, names, run)
        stored = await self._stored_snapshot(target, snapshot, names)
        if target.backup_restore.drop_previous_after_verify and stored is not None:
            await self.guard(f"dropping the replaced database {names.previous}")
            await self._drop_replaced(target, names, run, stored if self.overlap else None)
        await self.release_lease()
        exited = await self._writes_back(target)
        return await self._end(backup, snapshot, names, stored is not None, exited)

    async def _writes_back(self, target: TargetDescription) -> bool:
        exited = await self._exit_read_only(target, "the restore is verified")
        if exited:
            self.mark("writes_back")
        return exited

    async def _drop_replaced(
        self, target: TargetDescription, names: DatabaseNames, run: str, stored: Snapshot | None
    ) -> None:
        await workflow.execute_activity(
            drop_replaced,
            DropInput(target=target.target, database=names.previous, run=run, snapshot=stored),
            start_to_close_timeout=STEP_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=ACT_RETRY,
        )
        self.audit.record(
            "action", f"dropped the replaced database {names.previous} (snapshot kept)"
        )

    async def _end(
        self,
        backup: BackupInfo,
        planned: PlannedSnapshot,
        names: DatabaseNames,
        stored: bool,
        exited: bool,
    ) -> RunReport:
        summary = self._summary(backup, planned, names, stored)
        if not stored:
            summary += (
                f"; THE SAFETY SNAPSHOT WAS NOT STORED ({self.snapshot_failure}), so the "
                f"replaced database {names.previous} was kept, not dropped: save it (pg_dump) "
                "before dropping it"
            )
        if not exited:
            summary += "; WRITES ARE STILL OFF: the read-only exit did not complete"
        if not stored or not exited:
            return await self.escalate(summary)
        return await self.finish(RunStatus.REMEDIATED, summary)

    async def _after_verified(
        self,
        target: TargetDescription,
        backup: BackupInfo,
        planned: PlannedSnapshot,
        names: DatabaseNames,
        run: str,
    ) -> RunReport:
        """WRITES_BACK_PATCH: writes come back as soon as the restored database is verified,
        while the replaced database's snapshot is still shipping. Nothing waits on that
        copy but the drop: the replaced database holds the same data until the snapshot is
        read back from S3, and it is dropped only then, and only if the kill switch is off
        (the lease went to the read-only exit, so the envelope is asked directly)."""
        await self.release_lease()
        exited = await self._writes_back(target)
        stored = await self._stored_snapshot(target, planned, names)
        if target.backup_restore.drop_previous_after_verify and stored is not None:
            status = await self.safety_status()
            if status.paused:
                step = f"dropping the replaced database {names.previous}"
                raise KillSwitchStop(step, f"remediations are {status.paused_text()}")
            await self._drop_replaced(target, names, run, stored)
        return await self._end(backup, planned, names, stored is not None, exited)

    def _summary(
        self, backup: BackupInfo, snapshot: PlannedSnapshot, names: DatabaseNames, stored: bool
    ) -> str:
        stopped = self.timeline.get("writes_stopped", workflow.now())
        window = stopped - backup.taken_at
        kept = f"the safety snapshot {snapshot.url}" if stored else f"database {names.previous}"
        return (
            f"restored {names.live} from {backup.url}; data-loss window {_span(window)}: "
            f"writes between {backup.taken_at:%Y-%m-%d %H:%M:%S} and "
            f"{stopped:%Y-%m-%d %H:%M:%S} UTC are not in it (they are in {kept})"
        )

    def _ship_snapshot(
        self,
        target: TargetDescription,
        names: DatabaseNames,
        run: str,
        planned: PlannedSnapshot,
    ) -> ActivityHandle[Snapshot]:
        """Start shipping the replaced database's snapshot; verification runs meanwhile.
        Cancelling it waits for the dump to stop (a switch back renames that database)."""
        self.set_status(RunStatus.ACTING, f"Verifying; shipping {planned.url}")
        return workflow.start_activity(
            snapshot_replaced,
            SnapshotReplacedInput(target=target.target, names=names, run=run, planned=planned),
            start_to_close_timeout=LONG_TIMEOUT,
            heartbeat_timeout=self._heartbeat(target),
            retry_policy=LONG_RETRY,
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )

    async def _stop_shipping(self) -> None:
        shipping, self.shipping = self.shipping, None
        if shipping is not None and not shipping.done():
            shipping.cancel()
            await asyncio.gather(shipping, return_exceptions=True)
            self.audit.record("snapshot", "stopped shipping the safety snapshot: switching back")

    async def _stored_snapshot(
        self, target: TargetDescription, planned: PlannedSnapshot, names: DatabaseNames
    ) -> Snapshot | None:
        """The safety snapshot once it is in S3 and read back: what lets the replaced
        database go. None (recorded, and the replaced database kept) if it could not be."""
        if isinstance(planned, Snapshot):
            return planned  # taken before the plan (runs from before OVERLAP_PATCH)
        assert self.shipping is not None
        self.set_status(RunStatus.ACTING, f"Verified; checking the safety snapshot {planned.url}")
        try:
            snapshot = await self.shipping
            check = await workflow.execute_activity(
                verify_snapshot,
                VerifySnapshotInput(target=target.target, snapshot=snapshot),
                start_to_close_timeout=LONG_TIMEOUT,
                heartbeat_timeout=self._heartbeat(target),
                retry_policy=LONG_RETRY,
            )
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            cause = err.cause
            self.snapshot_failure = (
                cause.message if isinstance(cause, ApplicationError) else str(cause or err)
            )
            self.audit.record(
                "snapshot_failed",
                f"safety snapshot {planned.url} not stored: {self.snapshot_failure}; the "
                f"replaced database {names.previous} is kept",
            )
            return None
        self.audit.record(
            "snapshot",
            f"safety snapshot {snapshot.url} ({snapshot.size / 1e6:.1f} MB, "
            f"{sum(snapshot.row_counts.values())} rows) of the replaced database, read back "
            f"from S3: SHA-256 matches, {check.toc_entries} archive entries",
            sha256=snapshot.sha256,
        )
        self.mark("snapshot_stored")
        if snapshot.row_counts != planned.row_counts:
            self.audit.record(
                "snapshot_counts_differ",
                "the replaced database's row counts differ from the plan's (it took writes "
                f"while read-only?): planned {planned.row_counts}, snapshot "
                f"{snapshot.row_counts}; the snapshot holds what the database held",
            )
        return snapshot

    async def _clean_up_after_cancel(self) -> None:
        """Leave no half-done restore behind; keep writes off and say how to restore them."""
        names, run, done = self.names, self._run_marker(), []
        try:
            if self.shipping is not None and not self.shipping.done():
                await self._stop_shipping()
                done.append("stopped shipping the safety snapshot")
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

    def _snapshot_label(self) -> str:
        return f"pre-restore-{self._token()}" + (f"-{self.replans}" if self.replans else "")

    async def _plan_snapshot(self, target: TargetDescription) -> PlannedSnapshot:
        planned = await workflow.execute_activity(
            plan_snapshot,
            PlanSnapshotInput(target=target.target, label=self._snapshot_label()),
            start_to_close_timeout=LONG_TIMEOUT,
            heartbeat_timeout=self._heartbeat(target),
            retry_policy=READ_RETRY,
        )
        self.audit.record(
            "diagnosis",
            f"writes are off: {planned.database} (oid {planned.database_oid}) has "
            f"{sum(planned.row_counts.values())} rows in {len(planned.row_counts)} tables; "
            f"it is kept until its safety snapshot {planned.url} is in S3 and checked",
        )
        return planned

    async def _snapshot(self, target: TargetDescription) -> Snapshot:
        self.set_status(RunStatus.ACTING, f"Safety snapshot of {target.target}")
        snapshot = await workflow.execute_activity(
            snapshot_database,
            SnapshotInput(target=target.target, label=self._snapshot_label()),
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
        snapshot: PlannedSnapshot,
        names: DatabaseNames,
    ) -> Plan:
        drops = target.backup_restore.drop_previous_after_verify
        effects = (self._effects if self.overlap else self._effects_snapshot_first)(
            backup, snapshot, names, drops
        )
        # Plans of runs recorded before plans listed their effects do not name the drop either.
        listed = self.effects(*effects)
        return self._restore_plan(target, backup, check, snapshot, names, listed)

    @staticmethod
    def _effects_snapshot_first(
        backup: BackupInfo, snapshot: PlannedSnapshot, names: DatabaseNames, drops: bool
    ) -> list[Effect]:
        """Before OVERLAP_PATCH: the snapshot was in S3 before the plan was made."""
        loss = snapshot.taken_at - backup.taken_at
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
        return effects

    @staticmethod
    def _effects(
        backup: BackupInfo, snapshot: PlannedSnapshot, names: DatabaseNames, drops: bool
    ) -> list[Effect]:
        """OVERLAP_PATCH's effects: the snapshot is shipped from the replaced database after
        the switch, and the drop waits for it."""
        loss = snapshot.taken_at - backup.taken_at
        effects = [
            Effect(
                what=f"create {names.scratch} and restore {backup.url} into it",
                undoable=True,
                undo=f"drop {names.scratch} (done if the run is cancelled)",
            ),
            Effect(
                what=f"end the sessions on {names.live}; rename it {names.previous} and "
                f"{names.scratch} to {names.live} (one transaction): the last {_span(loss)} "
                f"of writes leave the live database (kept in {names.previous}, read-only)",
                undoable=True,
                undo="switch back (done automatically if verification fails); ended "
                "sessions reconnect",
            ),
            Effect(
                what=f"after the switch, pg_dump {names.previous} (the replaced data, unchanged "
                f"since writes stopped) to the safety snapshot {snapshot.url}, then read it "
                "back from S3 and check its SHA-256; if that fails, the run keeps "
                f"{names.previous} and escalates",
                undoable=True,
                undo=f"delete {snapshot.url}",
            ),
        ]
        if drops:
            effects.append(
                Effect(
                    what=f"after verification, and only once {snapshot.url} is checked in S3, "
                    f"DROP DATABASE {names.previous} WITH (FORCE); its data stays only in the "
                    "safety snapshot",
                    undoable=False,
                )
            )
        return effects

    def _restore_plan(
        self,
        target: TargetDescription,
        backup: BackupInfo,
        check: BackupCheck,
        snapshot: PlannedSnapshot,
        names: DatabaseNames,
        listed: list[Effect],
    ) -> Plan:
        loss = snapshot.taken_at - backup.taken_at
        expected = backup.row_counts
        drops = target.backup_restore.drop_previous_after_verify
        shipped_after = (
            [f'after the switch: pg_dump -Fc "{names.previous}" to {snapshot.url}; read back']
            if self.overlap
            else []
        )
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
                    *shipped_after,
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
                + f": writes of the last {_span(loss)} are lost (kept in {snapshot.url}"
                + (f", and in {names.previous} until it is checked)" if self.overlap else ")"),
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
