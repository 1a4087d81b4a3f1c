"""The steps both key_rotation flows take (rotate and compromised): issue a version through
Secrets Manager's protocol, restart the consumers, revoke a version, audit, and the checks
that verify a rotation. Each step is one or a few activities with its audit line beside it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.checks import CheckSpec
    from activities.deploy.models import RestartAppInput, RestartServiceInput
    from activities.deploy.releases import restart_service
    from activities.deploy.restart_hook import restart_app
    from activities.secrets.models import (
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
        revoke_credential_version,
        set_pending_on_target,
        test_credential_version,
    )
    from activities.targets import TargetDescription
    from workflows.models import RunStatus
    from workflows.policies import ACT_RETRY, HEARTBEAT_TIMEOUT, READ_RETRY, STEP_TIMEOUT
    from workflows.runbook import RunbookWorkflow

A = TypeVar("A")
R = TypeVar("R")


class StepFailed(Exception):
    """An acting step failed; the message says which and why (for the escalation). `drift`:
    it refused because the secret moved since the plan (nothing was done)."""

    def __init__(self, message: str, drift: bool = False) -> None:
        super().__init__(message)
        self.drift = drift


def step_failed(err: ActivityError, message: str) -> StepFailed:
    """`message` as a StepFailed, unless the run is being cancelled: a cancellation is not a
    failed step (no putting back, no escalation), so it propagates to the cancel path."""
    if is_cancelled_exception(err):
        raise err
    drift = isinstance(err.cause, ApplicationError) and err.cause.type == "PlanDrift"
    return StepFailed(f"{message}: {err.cause}", drift=drift)


class CredentialSteps(RunbookWorkflow):
    # The rotation's client request token: the id of the version it creates.
    token: str
    # The current version when the approved plan was made (the acting steps' precondition).
    planned_from: str = ""
    # The credential as last inspected.
    state: CredentialState | None

    async def _issue(self, target: TargetDescription) -> None:
        """createSecret, setSecret, testSecret, finishSecret."""
        self.set_status(RunStatus.ACTING, f"Issuing version {self.token} of {target.target}")
        try:
            pending = await self.act(create_pending_version, self._input(target))
            self.audit.record(
                "action",
                f"{'created' if pending.created else 'reused'} AWSPENDING version "
                f"{pending.version_id} for {pending.principal}",
                result=pending.model_dump(mode="json"),
            )
            set_on = await self.act(set_pending_on_target, self._input(target))
            self.audit.record("action", set_on.detail, acted=set_on.acted)
            tested = await self.read(
                test_credential_version, VersionInput(target=target.target, version_id=self.token)
            )
        except ActivityError as err:
            raise step_failed(err, f"issuing version {self.token} failed") from None
        self.audit.record(
            "test",
            f"version {self.token} ({tested.principal}) "
            + ("is accepted by the target" if tested.works else "is REFUSED by the target"),
        )
        if not tested.works:
            raise StepFailed(f"the target refuses the new version {self.token}")
        try:
            versions = await self.act(finish_rotation, self._input(target))
        except ActivityError as err:
            raise step_failed(err, f"finishing version {self.token} failed") from None
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
                    await self.act(
                        restart_app, RestartAppInput(target=consumer.name, idempotency_key=key)
                    )
                else:
                    await self.act(
                        restart_service,
                        RestartServiceInput(target=consumer.name, idempotency_key=key),
                    )
            except ActivityError as err:
                raise step_failed(err, f"restarting consumer {consumer.name} failed") from None
            self.mark("consumers_restarted")
            version = "the previous version" if purpose == "put-back" else "the new version"
            self.audit.record(
                "action", f"restarted {consumer.name} ({consumer.via}) to pick up {version}"
            )

    async def _revoke(
        self, target: TargetDescription, version: str, compromised: bool
    ) -> RevokeResult:
        self.set_status(RunStatus.ACTING, f"Revoking version {version} of {target.target}")
        revoked = await self.act(
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
            audit = await self.read(
                audit_credential, AuditInput(target=target.target, revoked_version=revoked_version)
            )
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            self.audit.record("audit_failed", f"the audit could not run: {err.cause}")
            return
        self.audit.record("audit", "; ".join(audit.findings), warnings=audit.warnings)
        if audit.warnings:
            await self.notify("audit", "warning", "; ".join(audit.warnings))

    async def read(self, activity: Callable[[A], Awaitable[R]], arg: A) -> R:
        return await workflow.execute_activity(
            activity,
            arg,
            start_to_close_timeout=STEP_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=READ_RETRY,
        )

    async def act(self, activity: Callable[[A], Awaitable[R]], arg: A) -> R:
        return await workflow.execute_activity(
            activity,
            arg,
            start_to_close_timeout=STEP_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=ACT_RETRY,
        )

    def _input(self, target: TargetDescription) -> CredentialInput:
        return CredentialInput(
            target=target.target, token=self.token, planned_from=self.planned_from
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
