"""key_rotation, mode=compromised (runbook 001): one gate for the whole sequence, and the
revoke comes first: the exposed credential stops working (a Postgres login's open sessions end
too), then a new one is issued, distributed and verified, then audited. There is no putting
back: the exposed credential is gone for good.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.secrets.models import CredentialState
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


class CompromisedFlow(CredentialSteps):
    async def _compromised(self, target: TargetDescription, state: CredentialState) -> RunReport:
        exposed = state.current
        consumers = target.credential.consumers if target.credential else []
        since = (
            f", current since {exposed.created_at:%Y-%m-%d %H:%M} UTC" if exposed.created_at else ""
        )
        plan = Plan(
            runbook=self.runbook,
            action="revoke_compromised_credential",
            target=target.target,
            parameters={
                "secret_arn": state.arn,
                "mode": "compromised",
                "revoke_version": exposed.version_id,
                "revoke_principal": exposed.principal,
                "new_version": self.token,
                "new_principal": state.next_principal,
                "consumers": [c.name for c in consumers],
                "sessions_of_exposed": state.sessions_of_current,
            },
            expected_impact=ExpectedImpact(
                summary=f"COMPROMISED: revoke {exposed.principal} (version "
                f"{exposed.version_id}{since}) FIRST"
                + (
                    f" and end its {state.sessions_of_current} open session(s)"
                    if state.sessions_of_current
                    else ""
                )
                + f"; its users ({', '.join(c.name for c in consumers) or 'none configured'}) "
                "fail until the new "
                f"credential ({state.next_principal}, version {self.token}) is issued and "
                "they are restarted; then audit. Cannot be undone",
                affected=max(1, len(consumers)),
                reversible=False,
                whole_target=True,
                effects=self.effects(
                    Effect(
                        what=f"{exposed.principal} (version {exposed.version_id}) is revoked"
                        + (
                            f" and its {state.sessions_of_current} open session(s) ended"
                            if state.sessions_of_current
                            else ""
                        ),
                        undoable=False,
                    ),
                    Effect(
                        what=f"version {self.token} ({state.next_principal}) is issued and "
                        "becomes AWSCURRENT",
                        undoable=False,
                    ),
                    Effect(
                        what="restart "
                        + (", ".join(c.name for c in consumers) or "no consumers configured"),
                        undoable=False,
                    ),
                ),
            ),
        )
        decision = await self.approve_plan(plan)
        if decision.outcome != DecisionOutcome.APPROVED:
            return await self.not_approved(decision.outcome, plan)
        self.mark("approved")
        revoked = await self._revoke(target, exposed.version_id, compromised=True)
        exposure = (
            f"exposed: {revoked.principal} (version {exposed.version_id}{since}); stopped "
            f"working at {revoked.verified_at:%Y-%m-%d %H:%M:%S} UTC"
            + (f"; {revoked.terminated} open session(s) ended" if revoked.terminated else "")
        )
        if not revoked.rejected:
            return await self.escalate(f"{exposure.split(';')[0]} STILL WORKS after revoking it")
        self.mark("revoked", revoked.verified_at)
        try:
            await self._issue(target)
            await self._restart_consumers(target, "compromised")
        except StepFailed as failed:
            return await self.escalate(
                f"{exposure}; issuing the new credential failed ({failed}): consumers are down"
            )
        verified = await self.verify(self._checks(target), target.key_rotation)
        await self._audit(target, exposed.version_id)
        if not verified.passed:
            failing = "; ".join(f"{o.check}: {o.observed}" for o in verified.last if not o.passed)
            return await self.escalate(
                f"{exposure}; new credential {self.token} is current but verification failed "
                f"({failing})"
            )
        self.mark("verified")
        return await self.finish(
            RunStatus.REMEDIATED,
            f"remediated: {exposure}; new credential {state.next_principal} (version "
            f"{self.token}) current and verified",
        )
