"""Runbook: rotate a credential through AWS Secrets Manager (runbooks 003 "Rotate API Keys",
001 "API Key Compromised" / "Database Credentials Compromised").

A credential is a target of kind "secret": a secret ARN, what it unlocks (a Postgres login,
or a vendor's API key) and its consumers. The run's client request token (parameter `token`,
default derived from the run) is the id of the version it creates, so a retried or repeated
run with the same token never makes a second credential.

`mode=rotate` (default; `workflows/key_rotation_rotate.py`):
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

`mode=compromised` (`workflows/key_rotation_compromised.py`): one gate for the sequence, and
the revoke comes first: the exposed credential stops working (Postgres: its open sessions end
too), then a new one is issued, distributed and verified, then audited. The report says what
was exposed, since when, and when it stopped working. There is no putting back: the old
credential is gone.

No value crosses the workflow boundary: activities take the target and version ids.
"""

from __future__ import annotations

import asyncio
import hashlib

from temporalio import workflow
from temporalio.exceptions import ActivityError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.secrets.models import TOKEN_PATTERN, CredentialInput, CredentialState
    from activities.secrets.rotation import inspect_credential, restore_previous_version
    from activities.targets import TargetDescription
    from workflows.key_rotation_compromised import CompromisedFlow
    from workflows.key_rotation_rotate import RotateFlow
    from workflows.key_rotation_steps import StepFailed
    from workflows.models import RunbookInput, RunReport, RunStatus
    from workflows.names import KEY_ROTATION

MODES = ("rotate", "compromised")


@workflow.defn(name="KeyRotationWorkflow")
class KeyRotationWorkflow(RotateFlow, CompromisedFlow):
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
            state = await self.read(inspect_credential, CredentialInput(
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

    def lease_also(self) -> list[str]:
        """Leased with the credential: the database whose logins it changes, and the
        consumers it restarts."""
        credential = self.described.credential if self.described else None
        if credential is None:
            return []
        database = [credential.database] if credential.database else []
        return database + [c.name for c in credential.consumers]

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
                result = await self.act(restore_previous_version, self._input(target))
                if "switched" in self.timeline:
                    await self._restart_consumers(target, "put-back")
                summary = f"cancelled before verification; rotation undone: {result.detail}"
            except (ActivityError, StepFailed) as err:
                cause = err.cause if isinstance(err, ActivityError) else err
                summary = f"cancelled, and undoing the rotation FAILED ({cause}): check {state.arn}"
        await self.cancelled(summary)
