"""key_rotation, mode=rotate (runbook 003): plan, gate, issue the new version, restart the
consumers, verify; then a second gate to revoke the old credential. A failed step or a failed
verification puts the previous version back (compensation) and escalates.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.secrets.models import CredentialInput, CredentialState
    from activities.secrets.rotation import inspect_credential, restore_previous_version
    from activities.targets import TargetDescription
    from workflows.key_rotation_steps import CredentialSteps, StepFailed
    from workflows.models import (
        DecisionOutcome,
        Effect,
        ExpectedImpact,
        Plan,
        RunReport,
        RunStatus,
    )
    from workflows.policies import MAX_REPLANS
    from workflows.target_lease import KillSwitchStop


class RotateFlow(CredentialSteps):
    async def _rotate(self, target: TargetDescription, state: CredentialState) -> RunReport:
        plan = self._rotation_plan(target, state)
        decision = await self.approve_plan(plan)
        if decision.outcome != DecisionOutcome.APPROVED:
            return await self.not_approved(decision.outcome, plan)
        self.mark("approved")
        self.planned_from = state.current.version_id
        try:
            await self._issue(target)
        except StepFailed as failed:
            if failed.drift and self.replans < MAX_REPLANS:
                return await self._replan(target, str(failed))
            return await self._put_back(target, state, str(failed), restart=False)
        try:
            await self.guard("restarting the consumers")
        except KillSwitchStop as stop:
            return await self._stopped_undone(target, state, stop)
        try:
            await self._restart_consumers(target, "rotate")
        except StepFailed as failed:
            return await self._put_back(target, state, str(failed), restart=True)
        verified = await self.verify(self._checks(target), target.key_rotation)
        if not verified.passed:
            failing = "; ".join(f"{o.check}: {o.observed}" for o in verified.last if not o.passed)
            return await self._put_back(
                target, state, f"verification failed after the switch ({failing})", restart=True
            )
        self.mark("verified")
        rotated = (
            f"rotated {state.arn}: version {state.current.version_id} -> {self.token} "
            f"({state.current.principal} -> {state.next_principal}); "
            f"{len(target.credential.consumers) if target.credential else 0} consumer(s) "
            "restarted and healthy"
        )
        if state.strategy == "single_user":
            return await self.finish(
                RunStatus.REMEDIATED,
                f"remediated: {rotated}; the old password stopped working when the new one was "
                "set (single user)",
            )
        return await self._revoke_old(target, state, rotated)

    async def _revoke_old(
        self, target: TargetDescription, state: CredentialState, rotated: str
    ) -> RunReport:
        old = state.current
        now = await self.read(inspect_credential, self._input(target))
        still = now.sessions_of_previous
        plan = Plan(
            runbook=self.runbook,
            action="revoke_credential",
            target=target.target,
            parameters={
                "secret_arn": state.arn,
                "version": old.version_id,
                "principal": old.principal,
                "replaced_by": self.token,
                "sessions_still_open": still,
            },
            expected_impact=ExpectedImpact(
                summary=f"revoke the previous credential {old.principal} (version "
                f"{old.version_id}); anything still using it is refused from then on; "
                + (
                    f"{still} session(s) are STILL OPEN as {old.principal}: something has not "
                    "moved to the new login (open sessions survive the revoke)"
                    if still
                    else f"no session is open as {old.principal}"
                ),
                affected=1,
                reversible=False,
                whole_target=True,
                effects=self.effects(
                    Effect(
                        what=f"{old.principal} (version {old.version_id}) stops working: "
                        "anything still using it is refused",
                        undoable=False,
                    )
                ),
            ),
        )
        self.set_status(RunStatus.PLANNING, f"Rotated; asking to revoke {old.principal}")
        decision = await self.approve_plan(plan)
        if decision.outcome == DecisionOutcome.TIMED_OUT:
            return await self.escalate(
                f"{rotated}; the old credential {old.principal} is STILL VALID: nobody approved "
                "revoking it before the deadline"
            )
        if decision.outcome != DecisionOutcome.APPROVED:
            return await self.finish(
                RunStatus.REMEDIATED,
                f"remediated: {rotated}; the old credential {old.principal} is still valid "
                f"(revoke {decision.outcome.value})",
            )
        revoked = await self._revoke(target, old.version_id, compromised=False)
        if not revoked.rejected:
            return await self.escalate(
                f"{rotated}; but the old credential {old.principal} still works after revoking it"
            )
        await self._audit(target, old.version_id)
        return await self.finish(
            RunStatus.REMEDIATED,
            f"remediated: {rotated}; old credential {revoked.principal} revoked and refused "
            f"since {revoked.verified_at:%Y-%m-%d %H:%M:%S} UTC",
        )

    async def _put_back(
        self, target: TargetDescription, state: CredentialState, why: str, restart: bool
    ) -> RunReport:
        """Compensate a failed rotation: the previous version is current (and works) again,
        and the consumers that were restarted pick it up again."""
        self.set_status(RunStatus.ACTING, f"{why}; putting the previous version back")
        try:
            result = await self.act(restore_previous_version, self._input(target))
            self.audit.record("compensation", result.detail)
            if restart:
                await self._restart_consumers(target, "put-back")
        except (ActivityError, StepFailed) as err:
            if is_cancelled_exception(err):
                raise
            cause = err.cause if isinstance(err, ActivityError) else err
            return await self.escalate(
                f"{why}; putting {state.current.version_id} back failed too ({cause}): "
                f"{state.arn} needs a person now"
            )
        return await self.escalate(
            f"{why}; version {state.current.version_id} ({state.current.principal}) is current "
            f"again and works; rotation {self.token} left as a non-current version"
        )

    async def _replan(self, target: TargetDescription, why: str) -> RunReport:
        """The secret moved between plan and act (someone rotated it): nothing was done;
        inspect again, and the new plan needs a new decision."""
        self.replans += 1
        self.audit.record("plan_drift", f"{why}; diagnosing again")
        state = await self.read(inspect_credential, CredentialInput(
            target=target.target, token=self.token))  # fmt: skip
        self.audit.record(
            "diagnosis",
            f"{state.arn}: current version {state.current.version_id} is "
            f"{state.current.principal}; this rotation's version {self.token} is "
            f"{state.token_stage}",
            state=state.model_dump(mode="json"),
        )
        self.state = state
        return await self._rotate(target, state)

    async def _stopped_undone(
        self, target: TargetDescription, state: CredentialState, stop: KillSwitchStop
    ) -> RunReport:
        """Paused between the switch and the consumers' restart: no consumer moved yet, so
        undoing the switch (our own change) is what leaves the target consistent."""
        try:
            result = await self.act(restore_previous_version, self._input(target))
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            return await self.stopped(
                stop,
                f"Undoing the switch FAILED ({err.cause}): version {self.token} is current "
                f"and no consumer was restarted; {state.arn} needs a person now.",
            )
        self.audit.record("compensation", result.detail)
        return await self.stopped(
            stop,
            f"Rotation undone: version {state.current.version_id} ({state.current.principal}) "
            "is current again; no consumer was restarted.",
        )

    def _rotation_plan(self, target: TargetDescription, state: CredentialState) -> Plan:
        consumers = target.credential.consumers if target.credential else []
        names = ", ".join(c.name for c in consumers) or "no consumers configured"
        if state.strategy == "alternating_users":
            how = (
                f"set a new password on the inactive role {state.next_principal} (consumers use "
                f"{state.current.principal}); switch the secret to it; restart {names}; then a "
                f"second gate to revoke {state.current.principal}'s password. No downtime: the "
                "old login keeps working until that revoke"
            )
        elif state.strategy == "single_user":
            how = (
                f"change the password of {state.current.principal} in place; switch the secret; "
                f"restart {names}. CAVEAT (single user): connections opened with the old "
                "password fail from the change until each consumer has restarted; open "
                "connections stay up"
            )
        else:
            how = (
                f"create a new key; store it in the secret; restart {names}; verify; then a "
                f"second gate to revoke {state.current.principal}"
            )
        notes = []
        if state.token_stage == "pending":  # noqa: S105 (a stage, not a secret)
            notes.append(f"resumes the pending version {self.token} of an earlier attempt")
        if state.stale_pending:
            notes.append(f"replaces a stale AWSPENDING version {state.stale_pending}")
        if not state.current_works:
            notes.append("the current version is REFUSED by the target right now")
        return Plan(
            runbook=self.runbook,
            action="rotate_credential",
            target=target.target,
            parameters={
                "secret_arn": state.arn,
                "strategy": state.strategy,
                "from_version": state.current.version_id,
                "from_principal": state.current.principal,
                "new_version": self.token,
                "new_principal": state.next_principal,
                "consumers": [c.name for c in consumers],
            },
            expected_impact=ExpectedImpact(
                summary=how + "".join(f"; {n}" for n in notes),
                affected=max(1, len(consumers)),
                reversible=True,
                whole_target=True,
                effects=self.effects(
                    Effect(
                        what=f"version {self.token} ({state.next_principal}) becomes "
                        f"AWSCURRENT of {state.arn} and its password is set on the target",
                        undoable=True,
                        undo=f"version {state.current.version_id} current again, its password "
                        "back (done automatically if a step or verification fails)",
                    ),
                    Effect(
                        what=f"restart {names} to pick up the new version",
                        undoable=False,
                    ),
                ),
            ),
        )
