"""Runbook: rotate a credential through AWS Secrets Manager (runbooks 003 "Rotate API Keys",
001 "API Key Compromised" / "Database Credentials Compromised").

A credential is a target of kind "secret": a secret ARN, what it unlocks (a Postgres login,
or a vendor's API key) and its consumers. The run's client request token (parameter `token`,
default derived from the run) is the id of the version it creates, so a retried or repeated
run with the same token never makes a second credential.

`mode=rotate` (default):
1. Inspect: versions, who the current one names, whether it works. This token already
   finished: nothing to do.
2. Plan (the new version for the inactive role / the same role / a new key; the consumers
   restarted; single-user's brief failure); gate.
3. Secrets Manager's protocol: create AWSPENDING (the token), set it on the target, test it,
   finish (AWSCURRENT moves).
4. Restart or redeploy the consumers; verify their health and the credential. Failing: the
   previous version is current again (and the role's password, single-user), the consumers
   are restarted onto it, escalate.
5. Second gate: revoke the old credential; prove it is refused; audit.

`mode=compromised`: one gate for the sequence, and the revoke comes first: the exposed
credential stops working (Postgres: its open sessions end too), then a new one is issued,
distributed and verified, then audited. The report says what was exposed, since when, and
when it stopped working. There is no putting back: the old credential is gone.

No value crosses the workflow boundary: activities take the target and version ids.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.checks import CheckSpec
    from activities.deploy.models import RestartAppInput, RestartServiceInput
    from activities.deploy.releases import restart_service
    from activities.deploy.restart_hook import restart_app
    from activities.secrets.models import (
        TOKEN_PATTERN,
        AuditInput,
        CredentialInput,
        CredentialState,
        RevokeInput,
        RevokeResult,
        VersionInput,
    )
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
    from activities.targets import TargetDescription
    from workflows.models import (
        DecisionOutcome,
        ExpectedImpact,
        Plan,
        RunbookInput,
        RunReport,
        RunStatus,
    )
    from workflows.names import KEY_ROTATION
    from workflows.runbook import READ_RETRY, RunbookWorkflow

TIMEOUT = timedelta(minutes=2)
A = TypeVar("A")
R = TypeVar("R")
MODES = ("rotate", "compromised")


class StepFailed(Exception):
    """An acting step failed; the message says which and why (for the escalation)."""


@workflow.defn(name="KeyRotationWorkflow")
class KeyRotationWorkflow(RunbookWorkflow):
    runbook = KEY_ROTATION

    @workflow.init
    def __init__(self, params: RunbookInput) -> None:
        super().__init__(params)
        self.token = ""
        self.mode = "rotate"
        # Known once inspected: what a cancellation has to undo.
        self.described: TargetDescription | None = None
        self.state: CredentialState | None = None

    @workflow.run
    async def run(self, params: RunbookInput) -> RunReport:
        self.start()
        self.mark("triggered", workflow.info().start_time)
        mode = params.parameters.get("mode", "rotate")
        info = workflow.info()
        token = (
            params.parameters.get("token")
            or hashlib.sha256(f"{info.workflow_id}/{info.run_id}".encode()).hexdigest()[:32]
        )
        if mode not in MODES:
            return await self.finish(
                RunStatus.ABORTED, f"bad input: mode {mode!r} is not one of {', '.join(MODES)}"
            )
        self.token = token
        if not TOKEN_PATTERN.match(token):
            return await self.finish(
                RunStatus.ABORTED,
                "bad input: token must be 32 to 64 letters, digits, '-' or '_' (it becomes the "
                "new version's id)",
            )
        try:
            target = await self.describe_target()
            if target.credential is None:
                return await self.finish(
                    RunStatus.ABORTED,
                    f"bad input: target {target.target!r} is a {target.kind} target; "
                    'key_rotation rotates a kind = "secret" target with a [credential] section',
                )
            state = await self._activity(inspect_credential, CredentialInput(
                target=target.target, token=token))  # fmt: skip
            self.audit.record(
                "diagnosis",
                f"{state.arn}: current version {state.current.version_id} is "
                f"{state.current.principal} ("
                + ("accepted" if state.current_works else "REFUSED")
                + f" by the target); this rotation's version {token} is {state.token_stage}",
                state=state.model_dump(mode="json"),
            )
            if state.token_stage in ("current", "previous", "superseded"):
                return await self.finish(
                    RunStatus.NO_ACTION_NEEDED,
                    f"no action needed: rotation {token} of {state.arn} already finished "
                    f"(its version is {state.token_stage}); nothing changed",
                )
            self.described, self.state, self.mode = target, state, mode
            if mode == "compromised":
                return await self._compromised(target, state)
            return await self._rotate(target, state)
        except asyncio.CancelledError:
            await self._clean_up_after_cancel()
            raise
        except ActivityError as err:
            if is_cancelled_exception(err):
                await self._clean_up_after_cancel()
                raise
            return await self.step_failed(err, "key rotation step failed")

    async def _clean_up_after_cancel(self) -> None:
        """A rotation cancelled before it was verified is undone (the previous version current
        and working, the consumers back on it); a compromised run says what state it left."""
        target, state = self.described, self.state
        if target is None or state is None or "approved" not in self.timeline:
            summary = "cancelled before anything was changed"
        elif self.mode == "compromised":
            summary = (
                f"cancelled after revoking the exposed {state.current.principal}; "
                + (
                    f"the new version {self.token} is current"
                    if "switched" in self.timeline
                    else "NO NEW CREDENTIAL WAS ISSUED: its users are refused until a person "
                    "runs key_rotation again"
                )
                if "revoked" in self.timeline
                else f"cancelled; {state.current.principal} may or may not be revoked yet: check"
            )
        elif "verified" in self.timeline:
            summary = (
                f"cancelled after the rotation was verified: version {self.token} is current; "
                f"the old credential {state.current.principal} is still valid (not revoked)"
            )
        else:
            try:
                result = await self._activity(restore_previous_version, self._input(target))
                if "switched" in self.timeline:
                    await self._restart_consumers(target, "put-back")
                summary = f"cancelled before verification; rotation undone: {result.detail}"
            except (ActivityError, StepFailed) as err:
                cause = err.cause if isinstance(err, ActivityError) else err
                summary = f"cancelled, and undoing the rotation FAILED ({cause}): check {state.arn}"
        self.audit.record("cancel_cleanup", summary)
        await self.notify("key_rotation_cancelled", "page", summary)
        await self.release_lease()
        self.set_status(RunStatus.CANCELLED, summary)

    # -- rotate ----------------------------------------------------------------------------

    async def _rotate(self, target: TargetDescription, state: CredentialState) -> RunReport:
        plan = self._rotation_plan(target, state)
        decision = await self.approve_plan(plan)
        if decision.outcome != DecisionOutcome.APPROVED:
            return await self.not_approved(decision.outcome, plan)
        self.mark("approved")
        try:
            await self._issue(target)
        except StepFailed as failed:
            return await self._put_back(target, state, str(failed), restart=False)
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
        now = await self._activity(inspect_credential, self._input(target))
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
            result = await self._activity(restore_previous_version, self._input(target))
            self.audit.record("compensation", result.detail)
            if restart:
                await self._restart_consumers(target, "put-back")
        except (ActivityError, StepFailed) as err:
            cause = err.cause if isinstance(err, ActivityError) else err
            return await self.escalate(
                f"{why}; putting {state.current.version_id} back failed too ({cause}): "
                f"{state.arn} needs a person now"
            )
        return await self.escalate(
            f"{why}; version {state.current.version_id} ({state.current.principal}) is current "
            f"again and works; rotation {self.token} left as a non-current version"
        )

    # -- compromised -----------------------------------------------------------------------

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

    # -- steps -----------------------------------------------------------------------------

    async def _issue(self, target: TargetDescription) -> None:
        """createSecret, setSecret, testSecret, finishSecret."""
        self.set_status(RunStatus.ACTING, f"Issuing version {self.token} of {target.target}")
        try:
            pending = await self._activity(create_pending_version, self._input(target))
            self.audit.record(
                "action",
                f"{'created' if pending.created else 'reused'} AWSPENDING version "
                f"{pending.version_id} for {pending.principal}",
                result=pending.model_dump(mode="json"),
            )
            set_on = await self._activity(set_pending_on_target, self._input(target))
            self.audit.record("action", set_on.detail, acted=set_on.acted)
            tested = await self._activity(
                test_credential_version, VersionInput(target=target.target, version_id=self.token)
            )
        except ActivityError as err:
            raise StepFailed(f"issuing version {self.token} failed: {err.cause}") from None
        self.audit.record(
            "test",
            f"version {self.token} ({tested.principal}) "
            + ("is accepted by the target" if tested.works else "is REFUSED by the target"),
        )
        if not tested.works:
            raise StepFailed(f"the target refuses the new version {self.token}")
        try:
            versions = await self._activity(finish_rotation, self._input(target))
        except ActivityError as err:
            raise StepFailed(f"finishing version {self.token} failed: {err.cause}") from None
        self.audit.record(
            "action",
            f"AWSCURRENT is version {versions.current} (AWSPREVIOUS {versions.previous})",
            versions=versions.model_dump(mode="json"),
        )
        self.mark("switched")

    async def _restart_consumers(self, target: TargetDescription, purpose: str) -> None:
        consumers = target.credential.consumers if target.credential else []
        for consumer in consumers:
            key = f"{self.token}/{consumer.name}/{purpose}"
            try:
                if consumer.via == "restart_hook":
                    await self._activity(
                        restart_app, RestartAppInput(target=consumer.name, idempotency_key=key)
                    )
                else:
                    await self._activity(
                        restart_service,
                        RestartServiceInput(target=consumer.name, idempotency_key=key),
                    )
            except ActivityError as err:
                raise StepFailed(
                    f"restarting consumer {consumer.name} failed: {err.cause}"
                ) from None
            version = "the previous version" if purpose == "put-back" else "the new version"
            self.audit.record(
                "action", f"restarted {consumer.name} ({consumer.via}) to pick up {version}"
            )

    async def _revoke(
        self, target: TargetDescription, version: str, compromised: bool
    ) -> RevokeResult:
        self.set_status(RunStatus.ACTING, f"Revoking version {version} of {target.target}")
        revoked = await self._activity(
            revoke_credential_version,
            RevokeInput(target=target.target, version_id=version, compromised=compromised),
        )
        sessions = "; ".join(s.describe() for s in revoked.sessions)
        self.audit.record(
            "revoke",
            f"{revoked.principal} (version {version}) "
            + ("revoked" if revoked.acted else "had already stopped working")
            + (", and is refused" if revoked.rejected else ", but STILL WORKS")
            + (f"; sessions open at the time: {sessions}" if sessions else "")
            + (f"; {revoked.terminated} ended" if revoked.terminated else ""),
            result=revoked.model_dump(mode="json"),
        )
        return revoked

    async def _audit(self, target: TargetDescription, revoked_version: str) -> None:
        try:
            audit = await self._activity(
                audit_credential, AuditInput(target=target.target, revoked_version=revoked_version)
            )
        except ActivityError as err:
            self.audit.record("audit_failed", f"the audit could not run: {err.cause}")
            return
        self.audit.record("audit", "; ".join(audit.findings), warnings=audit.warnings)
        if audit.warnings:
            await self.notify("audit", "warning", "; ".join(audit.warnings))

    async def _activity(self, activity: Callable[[A], Awaitable[R]], arg: A) -> R:
        return await workflow.execute_activity(
            activity, arg, start_to_close_timeout=TIMEOUT, retry_policy=READ_RETRY
        )

    def _input(self, target: TargetDescription) -> CredentialInput:
        return CredentialInput(target=target.target, token=self.token)

    # -- plan and checks -------------------------------------------------------------------

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
            ),
        )

    @staticmethod
    def _checks(target: TargetDescription) -> list[CheckSpec]:
        consumers = target.credential.consumers if target.credential else []
        checks = [
            CheckSpec(kind="url_healthy", target=c.name, url=url)
            for c in consumers
            for url in c.probe_urls
        ]
        return [*checks, CheckSpec(kind="credential_works", target=target.target)]
