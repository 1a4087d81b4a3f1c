"""A run's hold on the targets it acts on, in the safety envelope.

Taken after approval (the plan's target and every other target it touches, all or none),
renewed by a timer for as long as the run holds it (a restore step may outlast the TTL many
times), checked before each further destructive step (the kill switch stops a run at the next
step boundary), and released on every exit path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.safety import (
        CheckInResult,
        LeaseCheckIn,
        LeaseRelease,
        LeaseRequest,
        SafetyActivities,
    )
    from workflows.audit import AuditTrail
    from workflows.models import RunStatus
    from workflows.policies import HEARTBEAT_TIMEOUT, READ_RETRY

# Runs recorded before leases were renewed and checked between steps replay without it.
ENVELOPE_PATCH = "envelope-holds-v1"
MIN_RENEW_EVERY = timedelta(seconds=1)


class KillSwitchStop(Exception):
    """The run may not go on at a step boundary: remediations are paused, or another run
    took a target whose lease this run lost."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{reason}; stopped before {step}")
        self.step, self.reason = step, reason


class TargetLease:
    def __init__(
        self,
        target: str,
        runbook: str,
        audit: AuditTrail,
        set_status: Callable[[RunStatus, str], None],
    ) -> None:
        self.target, self.runbook = target, runbook
        self.audit, self.set_status = audit, set_status
        self.held = False
        self.targets: list[str] = []
        self.plan_id = ""
        self._renewer: asyncio.Task[None] | None = None

    async def acquire(self, plan_id: str, also: list[str], deadline: timedelta) -> bool:
        """Wait (coarse, growing timers) for the envelope to grant every target; False if it
        did not before `deadline` from now."""
        request = LeaseRequest(
            target=self.target,
            runbook=self.runbook,
            holder=workflow.info().workflow_id,
            plan_id=plan_id,
            also=also,
        )
        give_up_at = workflow.now() + deadline
        wait, last_reason = timedelta(seconds=2), ""
        while True:
            lease = await workflow.execute_activity_method(
                SafetyActivities.acquire_lease,
                request,
                start_to_close_timeout=timedelta(seconds=30),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=READ_RETRY,
            )
            if lease.granted:
                self.held, self.plan_id = True, plan_id
                self.targets = [self.target, *(t for t in also if t != self.target)]
                if also:
                    self.audit.record("safety_lease", "leased " + ", ".join(self.targets))
                self._keep(lease.ttl_seconds)
                return True
            if lease.reason != last_reason:
                self.audit.record("safety_wait", f"approved, not acting yet: {lease.reason}")
                self.set_status(RunStatus.WAITING, f"Approved; waiting: {lease.reason}")
                last_reason = lease.reason
            if workflow.now() + wait > give_up_at:
                self.audit.record("safety_abort", f"gave up waiting: {lease.reason}")
                return False
            await workflow.sleep(wait)
            wait = min(wait * 2, timedelta(seconds=60))

    def _keep(self, ttl_seconds: int) -> None:
        """Renew every third of the TTL while held, so no step outlasts the lease."""
        running = self._renewer is not None and not self._renewer.done()
        if running or ttl_seconds <= 0 or not workflow.patched(ENVELOPE_PATCH):
            return
        every = max(MIN_RENEW_EVERY, timedelta(seconds=ttl_seconds / 3))
        self._renewer = asyncio.create_task(self._renew(every))

    async def _renew(self, every: timedelta) -> None:
        reported: set[str] = set()
        while self.held:
            await workflow.sleep(every)
            try:
                result = await self._check_in()
            except ActivityError as err:
                if is_cancelled_exception(err):
                    return  # released meanwhile
                self.audit.record("safety_renew_failed", f"lease not renewed: {err.cause}")
                continue
            for lost in set(result.lost) - reported:
                self.audit.record("safety_lease_lost", f"lease on {lost} was lost")
                reported.add(lost)

    async def guard(self, step: str) -> None:
        """Before a destructive step after the first: renew, and stop here if the kill
        switch is on or a target was lost."""
        if not self.held or not workflow.patched(ENVELOPE_PATCH):
            return
        result = await self._check_in()
        if result.paused:
            raise KillSwitchStop(step, f"remediations are {result.reason}")
        if result.lost:
            raise KillSwitchStop(step, "lease lost to another run: " + ", ".join(result.lost))

    async def _check_in(self) -> CheckInResult:
        return await workflow.execute_activity_method(
            SafetyActivities.check_in,
            LeaseCheckIn(
                targets=self.targets,
                holder=workflow.info().workflow_id,
                runbook=self.runbook,
                plan_id=self.plan_id,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=READ_RETRY,
        )

    async def release(self, acted: bool = True) -> None:
        """Let other runbooks act on the targets again (a failure leaves them to expire).
        `acted=False`: the plan was dropped before acting; its action does not count."""
        if self._renewer is not None and not self._renewer.done():
            self._renewer.cancel()
        if not self.held:
            return
        try:
            await workflow.execute_activity_method(
                SafetyActivities.release_lease,
                LeaseRelease(
                    target=self.target,
                    holder=workflow.info().workflow_id,
                    also=[t for t in self.targets if t != self.target],
                    acted=acted,
                ),
                start_to_close_timeout=timedelta(seconds=30),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=READ_RETRY,
            )
            self.held = False
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            self.audit.record("safety_release_failed", "lease not released; it will expire")
