"""Runbook: read-only mode ("STOP ACCEPTING WRITES" when data is at risk).

Enter (gate) -> verify writes are refused and reads work -> hold until a lead ends the hold
(`end_hold` Update) or the TTL passes, reminding the channel meanwhile -> exit (gate) ->
verify writes work. A rejected or unanswered exit gate keeps the target read-only and goes back
to holding: writes come back only by a decision. Cancelling the run while the target is
read-only restores writes (no gate: whoever cancels decides), or pages loudly if it cannot.

Modes: `postgres` (the database's `default_transaction_read_only`, existing sessions ended)
and `app_flag` (the app's maintenance flag over HTTP). Parameter `mode` picks one where a
target has both. Parameter `phase` = `enter` or `exit` runs half the runbook, for a parent
runbook (backup_restore) that does its work between the two, or to end a mode by hand.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.exceptions import ActivityError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.checks import CheckSpec
    from activities.http.app_flag import app_read_only_state, set_app_read_only
    from activities.models import ReadOnlyInput, ReadOnlyResult
    from activities.postgres.read_only import pg_read_only_state, set_database_read_only
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
    from workflows.names import READ_ONLY
    from workflows.policies import ACT_RETRY, HEARTBEAT_TIMEOUT, READ_RETRY, STEP_TIMEOUT
    from workflows.runbook import BadInputError, RunbookWorkflow

PHASES = ("full", "enter", "exit")


class EndHold(BaseModel):
    """Ends the hold early. Not itself a decision to restore writes: the exit gate is."""

    requested_by: str
    reason: str = ""


@workflow.defn(name="ReadOnlyWorkflow")
class ReadOnlyWorkflow(RunbookWorkflow):
    runbook = READ_ONLY

    @workflow.init
    def __init__(self, params: RunbookInput) -> None:
        super().__init__(params)
        self.holding = False
        self.hold_ended: EndHold | None = None
        # True from the moment a change to read-only may have been made, until writes are back.
        self.read_only = False
        self.mode = ""

    @workflow.update
    async def end_hold(self, request: EndHold) -> str:
        self.hold_ended = request
        self.audit.record(
            "hold_ended", f"hold ended by {request.requested_by}", actor=request.requested_by
        )
        return "hold ended; the exit plan now waits for approval"

    @end_hold.validator
    def _validate_end_hold(self, request: EndHold) -> None:
        if not self.holding:
            raise ValueError("this run is not holding read-only mode")
        if not request.requested_by:
            raise ValueError("say who ends the hold (requested_by)")

    @workflow.run
    async def run(self, params: RunbookInput) -> RunReport:
        self.start()
        try:
            return await self._run(params)
        except asyncio.CancelledError:
            await self._restore_after_cancel()
            raise
        except BadInputError as err:
            return await self.finish(RunStatus.ABORTED, f"bad input: {err}")
        except ActivityError as err:
            if is_cancelled_exception(err):  # cancelled while an activity ran
                await self._restore_after_cancel()
                raise
            still = " THE TARGET MAY STILL BE READ-ONLY." if self.read_only else ""
            return await self.step_failed(err, "step failed", "." + still)

    async def _run(self, params: RunbookInput) -> RunReport:
        phase = params.parameters.get("phase", "full")
        if phase not in PHASES:
            raise BadInputError(f"parameter phase={phase!r}; use one of {', '.join(PHASES)}")
        target = await self.describe_target()
        self.mode = self._choose_mode(target, params.parameters.get("mode"))
        if phase in ("full", "enter"):
            ended = await self._enter(target)
            if ended is not None:
                return ended
            if phase == "enter":
                return await self.finish(
                    RunStatus.REMEDIATED, f"{target.target} is read-only ({self.mode})"
                )
            if not params.dry_run:
                await self._hold(target)
        else:
            self.read_only = True  # exit-only: assume the worst until verified writable
        return await self._exit(target)

    @staticmethod
    def _choose_mode(target: TargetDescription, wanted: str | None) -> str:
        if not target.read_only_modes:
            raise BadInputError(
                f"target {target.target!r} has no read-only mode: it needs kind = "
                '"postgres" or an [app_flag] section'
            )
        if wanted is None:
            return target.read_only_modes[0]
        if wanted not in target.read_only_modes:
            raise BadInputError(
                f"mode={wanted!r} is not available on {target.target!r} "
                f"(available: {', '.join(target.read_only_modes)})"
            )
        return wanted

    # -- enter -----------------------------------------------------------------------

    async def _enter(self, target: TargetDescription) -> RunReport | None:
        """Returns a report when the run ends here; None once the target is read-only."""
        state = await self._state(target, enabled=True)
        if state.was_read_only:
            self.audit.record("diagnosis", f"{state.scope} is already read-only; nothing to do")
            self.read_only = True
            return None
        self.set_status(RunStatus.PLANNING, f"Planning read-only mode for {target.target}")
        plan = self._plan(target, state, enabled=True)
        decision = await self.approve_plan(plan)
        if decision.outcome != DecisionOutcome.APPROVED:
            return await self.not_approved(decision.outcome, plan)
        self.set_status(RunStatus.ACTING, f"Entering read-only mode on {target.target}")
        self.read_only = True
        await self._set(target, enabled=True)
        verified = await self.verify(
            [CheckSpec(kind="writes_refused", target=target.target, mode=self.mode)],
            target.read_only,
        )
        if not verified.passed:
            return await self.escalate(
                f"{target.target}: read-only mode was set but writes are not refused, or reads "
                "fail: " + "; ".join(o.observed for o in verified.last)
            )
        # The change is made and verified: other runbooks may act on the target meanwhile
        # (a backup restore does exactly that); the exit takes the lease again.
        await self.release_lease()
        await self.notify("read_only_entered", "info", f"{target.target} is read-only")
        return None

    # -- hold ------------------------------------------------------------------------

    async def _hold(self, target: TargetDescription) -> None:
        config = target.read_only
        deadline = workflow.now() + config.hold_ttl
        self.holding, self.hold_ended = True, None
        since = workflow.now()
        self.set_status(
            RunStatus.HOLDING,
            f"{target.target} read-only; holding until a lead ends it or "
            f"{deadline:%Y-%m-%d %H:%M} UTC",
        )
        self.audit.record("holding", f"holding read-only for up to {config.hold_ttl}")
        while self.hold_ended is None:
            remaining = deadline - workflow.now()
            if remaining <= timedelta(0):
                self.audit.record("hold_expired", f"hold TTL of {config.hold_ttl} passed")
                break
            try:
                await workflow.wait_condition(
                    lambda: self.hold_ended is not None,
                    timeout=min(config.remind_every, remaining),
                )
            except TimeoutError:
                if workflow.now() < deadline:
                    minutes = (workflow.now() - since).total_seconds() / 60
                    await self.notify(
                        "read_only_reminder",
                        "warning",
                        f"{target.target} has been read-only for {minutes:.0f} min; end the "
                        f"hold to restore writes (workflow {workflow.info().workflow_id})",
                    )
        self.holding = False

    # -- exit ------------------------------------------------------------------------

    async def _exit(self, target: TargetDescription) -> RunReport:
        # An alert resolving now must not close the exit gate: only a decision restores writes.
        self.params = self.params.model_copy(update={"close_gate_on_resolve": False})
        self.gate.resolved_by = None
        while True:
            state = await self._state(target, enabled=False)
            if not state.was_read_only:
                self.audit.record("diagnosis", f"{state.scope} already accepts writes")
                break
            plan = self._plan(target, state, enabled=False)
            decision = await self.approve_plan(plan)
            if decision.outcome == DecisionOutcome.APPROVED:
                self.set_status(RunStatus.ACTING, f"Leaving read-only mode on {target.target}")
                await self._set(target, enabled=False)
                break
            if decision.outcome == DecisionOutcome.DRY_RUN:
                return await self.not_approved(decision.outcome, plan)
            why = "rejected" if decision.outcome == DecisionOutcome.REJECTED else "not approved"
            await self.notify(
                "read_only_exit_pending",
                "page",
                f"{target.target} stays READ-ONLY: the exit plan was {why}",
            )
            await self._hold(target)
        verified = await self.verify(
            [CheckSpec(kind="writes_accepted", target=target.target, mode=self.mode)],
            target.read_only,
        )
        if not verified.passed:
            return await self.escalate(
                f"{target.target}: read-only mode was lifted but writes still fail: "
                + "; ".join(o.observed for o in verified.last)
            )
        self.read_only = False
        return await self.finish(
            RunStatus.REMEDIATED, f"{target.target} accepts writes again ({self.mode})"
        )

    # -- cancellation ----------------------------------------------------------------

    async def _restore_after_cancel(self) -> None:
        if not self.read_only:
            await self.senders.unsilence()
            self.set_status(RunStatus.CANCELLED, "cancelled; nothing was changed")
            return
        target = self.params.target
        try:
            result = await self._set_by_name(target, enabled=False)
            self.read_only = False
            summary = f"cancelled: writes restored on {result.scope}"
            self.audit.record("cancel_cleanup", summary, result=result.model_dump())
            await self.notify("read_only_cancelled", "warning", summary)
        except ActivityError as err:
            summary = f"cancelled, and COULD NOT restore writes on {target}: {err.cause}"
            self.audit.record("cancel_cleanup_failed", summary)
            await self.notify("read_only_cancelled", "page", summary)
        await self.release_lease()
        await self.senders.unsilence()
        self.set_status(RunStatus.CANCELLED, summary)

    # -- activities ------------------------------------------------------------------

    async def _state(self, target: TargetDescription, *, enabled: bool) -> ReadOnlyResult:
        activity = pg_read_only_state if self.mode == "postgres" else app_read_only_state
        return await workflow.execute_activity(
            activity,
            ReadOnlyInput(target=target.target, enabled=enabled),
            start_to_close_timeout=STEP_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=READ_RETRY,
        )

    async def _set(self, target: TargetDescription, *, enabled: bool) -> ReadOnlyResult:
        result = await self._set_by_name(target.target, enabled=enabled)
        ended = f", {len(result.sessions_ended)} earlier sessions ended" if enabled else ""
        self.audit.record(
            "action",
            f"{result.scope}: read-only {'on' if enabled else 'off'}"
            + (" (it already was)" if result.was_read_only == enabled else "")
            + ended,
            result=result.model_dump(),
        )
        return result

    async def _set_by_name(self, target: str, *, enabled: bool) -> ReadOnlyResult:
        activity = set_database_read_only if self.mode == "postgres" else set_app_read_only
        return await workflow.execute_activity(
            activity,
            ReadOnlyInput(target=target, enabled=enabled),
            start_to_close_timeout=STEP_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=ACT_RETRY,
        )

    def _plan(self, target: TargetDescription, state: ReadOnlyResult, *, enabled: bool) -> Plan:
        if enabled:
            ended = (
                f"; ends {state.client_sessions} client sessions so they reconnect read-only"
                if self.mode == "postgres"
                else ""
            )
            summary = f"refuse writes on {state.scope} ({self.mode}){ended}"
        else:
            summary = f"accept writes again on {state.scope} ({self.mode})"
        if enabled:
            effects = [
                Effect(
                    what=f"writes are refused on {state.scope} ({self.mode})",
                    undoable=True,
                    undo="the exit phase (its own gate) accepts writes again",
                )
            ]
            if self.mode == "postgres" and state.client_sessions:
                effects.append(
                    Effect(
                        what=f"end {state.client_sessions} client sessions so they reconnect "
                        "read-only (their open transactions are rolled back)",
                        undoable=False,
                    )
                )
        else:
            effects = [
                Effect(
                    what=f"writes are accepted again on {state.scope} ({self.mode})",
                    undoable=True,
                    undo="enter read-only again",
                )
            ]
        return Plan(
            runbook=self.runbook,
            action="enter_read_only" if enabled else "exit_read_only",
            target=target.target,
            parameters={"mode": self.mode, "scope": state.scope, "statements": state.statements},
            expected_impact=ExpectedImpact(
                summary=summary,
                affected=max(1, state.client_sessions),
                reversible=True,
                # Writes stop for the whole target; runs started before this knew no such
                # field (their plan ids must not change on replay).
                whole_target=workflow.patched("read_only_whole_target"),
                effects=self.effects(*effects),
            ),
        )
