"""The approval gate: nothing destructive happens until the exact plan is approved.

A gate opens with a plan. Decisions arrive as `approve`/`reject` Updates carrying a decision
signed by the approval service; the gate authenticates it (an activity that holds the key),
then checks policy: the plan id is the open plan's, the approver is in the required group and
is not the requester. Refused attempts are recorded in the audit trail with the claimed
identity. After `remind_after` the gate escalates; after `abort_after` it closes as timed
out and the runbook aborts safely.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.approval_auth import (
        AuthenticationInput,
        AuthenticationResult,
        DecisionKind,
        DecisionRequest,
        authenticate_decision,
    )
    from activities.targets import GateSettings
    from workflows.audit import AuditTrail
    from workflows.models import (
        HARD_BLAST_RADIUS,
        ApprovalDecision,
        DecisionOutcome,
        Plan,
        RunStatus,
    )

Notifier = Callable[..., Awaitable[None]]
StatusSetter = Callable[[RunStatus, str], None]

DEFAULT_SETTINGS = GateSettings(
    required_group="engineering-leads",
    four_eyes=True,
    remind_after=timedelta(minutes=10),
    abort_after=timedelta(minutes=30),
)


class ApprovalGate:
    def __init__(
        self,
        *,
        requested_by: str,
        audit: AuditTrail,
        set_status: StatusSetter,
        notify: Notifier,
    ) -> None:
        self.requested_by = requested_by
        self.settings = DEFAULT_SETTINGS
        self.audit = audit
        self.set_status = set_status
        self.notify = notify
        self.open_plan: Plan | None = None
        self.opened_at: datetime | None = None
        self.decision: ApprovalDecision | None = None
        self.decisions: list[ApprovalDecision] = []
        self.run_finished = False
        # Set when the alert that started the run resolves and the route closes gates on it.
        self.resolved_by: str | None = None
        # Set by the safety envelope (cooldown, budget): no plan passes unattended.
        self.auto_approval_blocked: str | None = None

    # -- the runbook's side ------------------------------------------------------------

    async def request(self, plan: Plan, *, dry_run: bool) -> ApprovalDecision:
        """Open the gate for `plan` and return how it closed."""
        self.audit.record(
            "plan", plan.describe(), plan_id=plan.plan_id, plan=plan.model_dump(mode="json")
        )
        if dry_run:
            return self._close(plan, DecisionOutcome.DRY_RUN, "dry-run", f"would {plan.describe()}")
        policy = self._auto_approval_policy(plan)
        if policy is not None:
            return self._close(
                plan, DecisionOutcome.APPROVED, f"policy:{policy}", "within policy limits", policy
            )
        self.open_plan, self.opened_at, self.decision = plan, workflow.now(), None
        group = self.settings.required_group
        self.audit.record(
            "gate_opened",
            f"awaiting approval from {group} for plan {plan.plan_id}",
            plan_id=plan.plan_id,
            required_group=group,
        )
        self.set_status(
            RunStatus.AWAITING_APPROVAL,
            f"Awaiting {group}: {plan.describe()} (plan {plan.plan_id})",
        )
        await self.notify(
            "gate_opened",
            "info",
            f"approval needed from {group}: {plan.describe()}",
            plan_id=plan.plan_id,
            requested_by=self.requested_by,
            abort_at=self.abort_at(),
            approve_with=f"remediate approve {workflow.info().workflow_id}",
        )
        if self.resolved_by is not None:
            return self._resolved(plan)
        if not await self._wait_for_decision(self.settings.remind_after):
            waited = int(self.settings.remind_after.total_seconds() // 60)
            self.audit.record("gate_reminder", f"no decision after {waited} min; escalating")
            await self.notify("gate_reminder", "page", f"still awaiting {group}: {plan.describe()}")
            # Measured from the opening, so time spent paging does not extend the deadline.
            remaining = self.settings.abort_after - (workflow.now() - self.opened_at)
            if not await self._wait_for_decision(remaining):
                return self._close(
                    plan, DecisionOutcome.TIMED_OUT, "engine", "no decision before the deadline"
                )
        if self.decision is None:
            return self._resolved(plan)
        return self.decision

    def _resolved(self, plan: Plan) -> ApprovalDecision:
        return self._close(
            plan, DecisionOutcome.RESOLVED, self.resolved_by or "alert", "alert resolved first"
        )

    def abort_at(self) -> datetime | None:
        return self.opened_at + self.settings.abort_after if self.opened_at else None

    async def _wait_for_decision(self, within: timedelta) -> bool:
        try:
            await workflow.wait_condition(
                lambda: self.decision is not None or self.resolved_by is not None, timeout=within
            )
        except TimeoutError:
            return False
        return True

    def _auto_approval_policy(self, plan: Plan) -> str | None:
        policy = self.settings.auto_approve
        if policy is None or plan.action not in policy.actions:
            return None
        if self.auto_approval_blocked is not None:
            self.audit.record(
                "auto_approval_declined",
                f"safety envelope: {self.auto_approval_blocked}; a person must approve",
                policy=policy.name,
            )
            return None
        impact = plan.expected_impact
        share = impact.share_of_total if impact.share_of_total is not None else 1.0
        within = impact.affected <= policy.max_affected and (
            impact.whole_target or share <= min(policy.max_share, HARD_BLAST_RADIUS)
        )
        if not within:
            self.audit.record(
                "auto_approval_declined",
                f"plan exceeds policy {policy.name} limits "
                f"({impact.affected} affected, {share:.0%}); a person must approve",
                policy=policy.name,
            )
            return None
        return policy.name

    def _close(
        self,
        plan: Plan,
        outcome: DecisionOutcome,
        decided_by: str,
        reason: str,
        by_policy: str | None = None,
    ) -> ApprovalDecision:
        decision = ApprovalDecision(
            outcome=outcome,
            plan_id=plan.plan_id,
            decided_by=decided_by,
            decided_at=workflow.now(),
            reason=reason,
            by_policy=by_policy,
        )
        self._record_decision(decision)
        return decision

    def _record_decision(self, decision: ApprovalDecision) -> None:
        self.decision = decision
        self.decisions.append(decision)
        self.open_plan = None
        summary = {
            DecisionOutcome.APPROVED: f"approved by {decision.decided_by}",
            DecisionOutcome.REJECTED: f"rejected by {decision.decided_by}",
            DecisionOutcome.TIMED_OUT: "timed out: aborting safely, nothing was changed",
            DecisionOutcome.RESOLVED: "closed: the alert resolved before approval",
            DecisionOutcome.DRY_RUN: f"dry run: {decision.reason}",
        }[decision.outcome]
        self.audit.record(
            f"gate_{decision.outcome.value}",
            f"plan {decision.plan_id} {summary}",
            actor=decision.decided_by,
            plan_id=decision.plan_id,
            reason=decision.reason,
        )

    # -- the Update side ---------------------------------------------------------------

    def validate(self, request: DecisionRequest) -> None:
        """Cheap structural checks only: everything else is decided (and audited) below."""
        if self.run_finished:
            raise ApplicationError("this run has finished; there is no gate to decide")
        if not request.plan_id or not request.approver:
            raise ApplicationError("a decision must name the plan_id and the approver")

    async def decide(
        self, workflow_id: str, kind: DecisionKind, request: DecisionRequest
    ) -> ApprovalDecision:
        auth = await workflow.execute_activity(
            authenticate_decision,
            AuthenticationInput(workflow_id=workflow_id, kind=kind, request=request),
            start_to_close_timeout=timedelta(seconds=30),
        )
        if not auth.authenticated:
            self._refuse(request, f"not authenticated: {auth.reason}")
        earlier = self._earlier_decision(request.plan_id)
        if earlier is not None:
            return self._duplicate(kind, auth, earlier)
        if self.open_plan is None:
            # An early decision waits for its gate rather than being lost; it applies only if
            # the plan that opens is exactly the one it names.
            await workflow.wait_condition(lambda: self.open_plan is not None or self.run_finished)
            if self.open_plan is None:
                self._refuse(request, "the run finished before any gate opened")
        assert self.open_plan is not None
        if request.plan_id != self.open_plan.plan_id:
            self._refuse(
                request,
                f"plan {request.plan_id} is not the open plan {self.open_plan.plan_id}; "
                "read the current plan with `remediate pending`",
            )
        self._check_policy(request, auth)
        outcome = DecisionOutcome.APPROVED if kind == "approve" else DecisionOutcome.REJECTED
        return self._close(self.open_plan, outcome, auth.identity, request.reason)

    def _earlier_decision(self, plan_id: str) -> ApprovalDecision | None:
        for decision in reversed(self.decisions):
            if decision.plan_id == plan_id:
                return decision
        return None

    def _duplicate(
        self, kind: DecisionKind, auth: AuthenticationResult, earlier: ApprovalDecision
    ) -> ApprovalDecision:
        same = (kind == "approve") == (earlier.outcome == DecisionOutcome.APPROVED)
        if same:
            self.audit.record(
                "decision_duplicate",
                f"{kind} from {auth.identity} for plan {earlier.plan_id} repeats the decision "
                "already taken; ignored",
                actor=auth.identity,
            )
            return earlier
        self.audit.record(
            "decision_refused",
            f"{kind} from {auth.identity} arrived after plan {earlier.plan_id} was "
            f"{earlier.outcome.value} by {earlier.decided_by}",
            actor=auth.identity,
        )
        raise ApplicationError(
            f"plan {earlier.plan_id} was already {earlier.outcome.value} by {earlier.decided_by}",
            type="GateAlreadyDecided",
        )

    def _check_policy(self, request: DecisionRequest, auth: AuthenticationResult) -> None:
        group = self.settings.required_group
        if group not in auth.groups:
            self._refuse(request, f"{auth.identity} is not in the required group {group}")
        if self.settings.four_eyes and auth.identity == self.requested_by:
            self._refuse(request, f"{auth.identity} requested this run and cannot approve it")

    def _refuse(self, request: DecisionRequest, reason: str) -> None:
        self.audit.record(
            "decision_refused",
            f"decision from {request.approver!r} refused: {reason}",
            actor=request.approver,
            plan_id=request.plan_id,
        )
        raise ApplicationError(f"decision refused: {reason}", type="DecisionRefused")
