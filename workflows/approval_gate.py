"""The approval gate: nothing destructive happens until the exact plan is approved.

An approval means one thing: this person, authenticated, approved this plan, in this run, at
this gate, just now. Each opening of a gate is a gate instance (numbered within the run).
Decisions arrive as `approve`/`reject` Updates carrying a token the approval service signed
(`activities/decision_tokens.py`) and bound to the workflow id, run id, gate instance, plan id
and kind, with an expiry and an id accepted once. The gate verifies them itself with the
configured public keys: in the Update validator, so a forged, replayed or misbound decision
never enters history (the worker logs and counts it), and again in the handler. A decision
signed with a key added since the run read its keys (a rotation) has them read again
(`workflows/key_reloads.py`). Authentic
decisions are then checked against policy (group, four-eyes, a quorum of distinct approvers;
two when the requester is not authenticated) and every refusal is in the audit trail.

After `remind_after` the gate escalates; after `abort_after` (from the opening) it closes as
timed out and the runbook aborts safely.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import NoReturn

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities import known_keys
    from activities.approval_auth import DecisionKind, DecisionRequest
    from activities.decision_tokens import (
        DecisionClaims,
        TokenRefusedError,
        UnknownKeyError,
        key_id,
        public_key,
        verify,
    )
    from activities.targets import AutoApproveLimits, GateSettings
    from workflows.audit import AuditTrail
    from workflows.legacy_decisions import legacy_decide
    from workflows.models import (
        HARD_BLAST_RADIUS,
        ApprovalDecision,
        DecisionOutcome,
        Plan,
        RunbookInput,
        RunStatus,
    )
    from workflows.sender_loop import SENDER_LOOP_PATCH

from workflows import run_metrics
from workflows.key_reloads import KEY_RELOAD_PATCH, KeyReloads

Notifier = Callable[..., Awaitable[object]]
# A runbook's fresh look while its gate waits: why the open plan no longer fits (a lighter
# one is possible, no action is needed), or None if it still does.
Replan = Callable[[], Awaitable[str | None]]
StatusSetter = Callable[[RunStatus, str], None]
# Publishes the gate as it is now to visibility (workflows/gate_visibility.py).
Publisher = Callable[[], None]
KeyLoader = Callable[[], Awaitable[GateSettings]]

# Decisions of runs recorded before signed tokens replay through the old path.
SIGNED_DECISIONS_PATCH = "signed-decisions-v1"
# Runs started before a run knew its incident's alerts replay without its checks.
INCIDENT_PATCH = "incident-identity-v1"
# ...and before whole-target and irreversible plans needed the policy's explicit consent.
BOUNDED_AUTO_APPROVAL_PATCH = "bounded-auto-approval-v1"
# ...and before waiting gates diagnosed again.
PLAN_REFRESH_PATCH = "plan-refresh-v1"
REFUSALS_METRIC = "remediation_decisions_refused"

DEFAULT_SETTINGS = GateSettings(
    required_group="engineering-leads",
    four_eyes=True,
    remind_after=timedelta(minutes=10),
    abort_after=timedelta(minutes=30),
)
KEYS_RETRY = RetryPolicy(maximum_attempts=3, non_retryable_error_types=["ConfigError"])


class ApprovalGate:
    def __init__(
        self,
        *,
        params: RunbookInput,
        audit: AuditTrail,
        set_status: StatusSetter,
        notify: Notifier,
        publish: Publisher,
    ) -> None:
        self.params = params
        self.requested_by = params.requested_by
        self.settings = DEFAULT_SETTINGS
        self.audit = audit
        self.set_status = set_status
        self.notify = notify
        self.publish = publish
        # Whether visibility shows a gate open now (so closing unsets it, and only then).
        self.listed = False
        self.instance = 0  # gate openings so far in this run
        self.open_plan: Plan | None = None
        self.opened_at: datetime | None = None
        self.decision: ApprovalDecision | None = None
        self.decisions: list[ApprovalDecision] = []
        self.closed: dict[int, ApprovalDecision] = {}
        self.approved_by: list[str] = []  # counted approvals of the open gate
        self.used_tokens: set[str] = set()
        self.requester_verified: bool | None = None
        self.run_finished = False
        # When the open (or last approved) plan was made or last found still right.
        self.confirmed_at: datetime | None = None
        # Set when the alert that started the run resolves and the route closes gates on it.
        self.resolved_by: str | None = None
        # Set by the safety envelope (cooldown, budget): no plan passes unattended.
        self.auto_approval_blocked: str | None = None
        # Reads of the verify keys again, for a decision signed with a key added since.
        self.key_reloads = KeyReloads()

    # -- the runbook's side ------------------------------------------------------------

    def configure(self, settings: GateSettings) -> None:
        """The target's gate policy and keys (from describe_target); decides, once, whether
        the requester is authenticated."""
        self.settings = settings
        if settings.verify_keys:
            self.key_reloads.read()
        if self.requester_verified is None and settings.verify_keys:
            self.requester_verified = self._verify_requester()

    @property
    def approvals_required(self) -> int:
        needed = self.settings.min_approvals
        return needed if self.requester_verified else max(needed, 2)

    async def request(
        self, plan: Plan, *, dry_run: bool, replan: Replan | None = None
    ) -> ApprovalDecision:
        """Open the gate for `plan` and return how it closed. With `replan`, the run looks
        again every `refresh_after` while the gate waits, and closes it as superseded when
        the plan no longer fits. How it closed is told where the gate was announced (its
        Slack message is updated in place, a note goes on the run's PagerDuty incident)."""
        decision = await self._request(plan, dry_run=dry_run, replan=replan)
        if not dry_run and workflow.patched(SENDER_LOOP_PATCH):
            await self.notify(
                "gate_decided",
                "info",
                f"plan {decision.plan_id} {decision_summary(decision)}",
                plan_id=decision.plan_id,
                plan=plan.describe(),
                outcome=decision.outcome.value,
                decided_by=decision.decided_by,
                reason=decision.reason,
                gate=decision.gate,
            )
        return decision

    async def _request(
        self, plan: Plan, *, dry_run: bool, replan: Replan | None
    ) -> ApprovalDecision:
        self.instance += 1
        self.confirmed_at = workflow.now()
        self.audit.record(
            "plan", plan.describe(), plan_id=plan.plan_id, plan=plan.model_dump(mode="json")
        )
        if dry_run:
            return self._close(plan, DecisionOutcome.DRY_RUN, "dry-run", f"would {plan.describe()}")
        if self.resolved_by is not None and workflow.patched(INCIDENT_PATCH):
            # The incident resolved before the plan was made: neither a person nor a policy
            # is asked to approve it.
            return self._resolved(plan)
        policy = self._auto_approval_policy(plan)
        if policy is not None:
            return self._close(
                plan, DecisionOutcome.APPROVED, f"policy:{policy}", "within policy limits", policy
            )
        self.open_plan, self.opened_at, self.decision = plan, workflow.now(), None
        self.approved_by = []
        group, needed = self.settings.required_group, self.approvals_required
        self.audit.record(
            "gate_opened",
            f"awaiting approval from {group} for plan {plan.plan_id}"
            + (f" ({needed} distinct approvers)" if needed > 1 else "")
            + ("" if self.requester_verified else f"; requester {self.requested_by!r} is not "
               "authenticated (started outside the approval service)"),
            plan_id=plan.plan_id,
            required_group=group,
            gate=self.instance,
            approvals_required=needed,
        )  # fmt: skip
        # Before the status: a listing that sees AwaitingApproval finds the gate beside it.
        self.publish()
        self.listed = True
        self.set_status(
            RunStatus.AWAITING_APPROVAL,
            f"Awaiting {group}: {plan.describe()} (plan {plan.plan_id})",
        )
        run_metrics.gate_opened()
        await self.notify(
            "gate_opened",
            "info",
            f"approval needed from {group}: {plan.describe()}",
            plan_id=plan.plan_id,
            requested_by=self.requested_by,
            abort_at=self.abort_at(),
            approve_with=f"remediate approve {workflow.info().workflow_id}",
            effects=[e.describe() for e in plan.expected_impact.effects],
        )
        if self.resolved_by is not None:
            return self._resolved(plan)
        refresh = self.settings.refresh_after
        if replan is not None and refresh is not None and workflow.patched(PLAN_REFRESH_PATCH):
            return await self._wait_refreshing(plan, replan, refresh)
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

    async def _wait_refreshing(
        self, plan: Plan, replan: Replan, every: timedelta
    ) -> ApprovalDecision:
        """The gate's wait (reminder, deadline) with a fresh look at the world every `every`."""
        assert self.opened_at is not None
        remind_at = self.opened_at + self.settings.remind_after
        abort_at = self.opened_at + self.settings.abort_after
        refresh_at, reminded = self.opened_at + every, False
        while True:
            now = workflow.now()
            wake = min(refresh_at, abort_at if reminded else min(remind_at, abort_at))
            if await self._wait_for_decision(max(wake - now, timedelta(seconds=1))):
                break
            now = workflow.now()
            if now >= abort_at:
                return self._close(
                    plan, DecisionOutcome.TIMED_OUT, "engine", "no decision before the deadline"
                )
            if not reminded and now >= remind_at:
                reminded = True
                waited = int(self.settings.remind_after.total_seconds() // 60)
                self.audit.record("gate_reminder", f"no decision after {waited} min; escalating")
                group = self.settings.required_group
                await self.notify(
                    "gate_reminder", "page", f"still awaiting {group}: {plan.describe()}"
                )
            if workflow.now() < refresh_at or self.decision is not None:
                continue
            why = await replan()
            if self.decision is not None or self.resolved_by is not None:
                break  # decided meanwhile: the decision was for this exact plan
            if why is not None:
                return self._close(plan, DecisionOutcome.SUPERSEDED, "engine", why)
            self.confirmed_at = workflow.now()
            refresh_at = self.confirmed_at + every
            self.audit.record("plan_confirmed", f"diagnosed again: plan {plan.plan_id} holds")
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
        declined = self._auto_approval_declined(plan, policy.max_affected, policy.max_share)
        declined = declined or self._beyond_policy_kind(plan, policy)
        if declined is not None:
            self.audit.record("auto_approval_declined", declined, policy=policy.name)
            return None
        return policy.name

    def _beyond_policy_kind(self, plan: Plan, policy: AutoApproveLimits) -> str | None:
        """A whole-target or irreversible plan passes only a policy that allows that kind."""
        impact = plan.expected_impact
        missing = [
            flag
            for flag, needed, allowed in (
                ("allow_whole_target", impact.whole_target, policy.allow_whole_target),
                ("allow_irreversible", not impact.reversible, policy.allow_irreversible),
            )
            if needed and not allowed
        ]
        if not missing or not workflow.patched(BOUNDED_AUTO_APPROVAL_PATCH):
            return None
        what = " and ".join(
            w for w, needed in (("replaces the whole target", impact.whole_target),
                                ("cannot be undone", not impact.reversible)) if needed
        )  # fmt: skip
        return (
            f"the plan {what}; policy {policy.name} passes that only with "
            f"{' = true, '.join(missing)} = true; a person must approve"
        )

    def _auto_approval_declined(
        self, plan: Plan, max_affected: int, max_share: float
    ) -> str | None:
        if self.auto_approval_blocked is not None:
            return f"safety envelope: {self.auto_approval_blocked}; a person must approve"
        if self.requester_verified is False:
            return (
                f"requester {self.requested_by!r} is not authenticated; a run started outside "
                "the approval service never passes unattended"
            )
        impact = plan.expected_impact
        share = impact.share_of_total if impact.share_of_total is not None else 1.0
        within = impact.affected <= max_affected and (
            impact.whole_target or share <= min(max_share, HARD_BLAST_RADIUS)
        )
        if not within:
            return (
                f"plan exceeds policy limits ({impact.affected} affected, {share:.0%}); "
                "a person must approve"
            )
        return None

    def _close(
        self,
        plan: Plan,
        outcome: DecisionOutcome,
        decided_by: str,
        reason: str,
        by_policy: str | None = None,
        approvers: list[str] | None = None,
    ) -> ApprovalDecision:
        decision = ApprovalDecision(
            outcome=outcome,
            plan_id=plan.plan_id,
            decided_by=decided_by,
            decided_at=workflow.now(),
            reason=reason,
            by_policy=by_policy,
            gate=self.instance,
            approvers=approvers or [],
        )
        self.record_decision(decision)
        return decision

    def record_decision(self, decision: ApprovalDecision) -> None:
        self.decision = decision
        self.decisions.append(decision)
        self.closed[decision.gate] = decision
        self.open_plan = None
        if self.listed:
            self.publish()
            self.listed = False
        self.audit.record(
            f"gate_{decision.outcome.value}",
            f"plan {decision.plan_id} {decision_summary(decision)}",
            actor=decision.decided_by,
            plan_id=decision.plan_id,
            reason=decision.reason,
        )

    # -- the Update side ---------------------------------------------------------------

    def validate(self, kind: DecisionKind, request: DecisionRequest) -> None:
        """Runs before the Update enters history: a decision that is not authentic and bound
        to this run is refused here, logged and counted, and leaves no trace in the run."""
        if self.run_finished:
            raise ApplicationError("this run has finished; there is no gate to decide")
        if not self.settings.verify_keys:
            # A run that started before its keys were known (or before this worker version):
            # the handler loads them, verifies, and audits a refusal.
            if not request.token:
                self._refuse_unrecorded(kind, request, "unsigned decision (no token)", None)
            return
        try:
            self.authentic(kind, request)
        except UnknownKeyError as err:
            # A key this worker lists but the run does not (added since the run read its
            # keys): the handler reads them again. Any other key is refused here.
            if not known_keys.known(err.kid):
                self._refuse_unrecorded(kind, request, str(err), None)
            if not self.key_reloads.unknown_allowed():
                reason = f"{err}; this run read its keys again less than a minute ago"
                self._refuse_unrecorded(kind, request, reason, None)
        except TokenRefusedError as err:
            self._refuse_unrecorded(kind, request, str(err), getattr(err, "claims", None))

    def authentic(self, kind: DecisionKind, request: DecisionRequest) -> DecisionClaims:
        """The claims of a decision signed by the approval service for this run, this kind and
        a gate this run has open, has closed, or opens next; TokenRefusedError otherwise."""
        claims = verify(
            request.token,
            self.settings.verify_keys,
            audience="gate",
            now=workflow.now(),
            max_age=timedelta(seconds=self.settings.max_decision_age_seconds),
        )
        info = workflow.info()

        def refuse(reason: str) -> TokenRefusedError:
            err = TokenRefusedError(reason)
            err.claims = claims  # type: ignore[attr-defined]
            return err

        if claims.kind != kind:
            raise refuse(f"a {claims.kind} decision sent as {kind}")
        if claims.wid != info.workflow_id or claims.rid != info.run_id:
            raise refuse(
                f"decision for run {claims.wid}/{claims.rid or '?'}, not this run "
                f"({info.workflow_id}/{info.run_id})"
            )
        if claims.jti in self.used_tokens:
            raise refuse(f"decision {claims.jti} was already used")
        opening_next = self.open_plan is None and claims.gate == self.instance + 1
        if claims.gate < 1 or (claims.gate > self.instance and not opening_next):
            raise refuse(f"decision for gate {claims.gate}; this run has opened {self.instance}")
        open_plan = self.open_plan
        if claims.gate == self.instance and open_plan and claims.plan != open_plan.plan_id:
            raise refuse(
                f"plan {claims.plan} is not the open plan {open_plan.plan_id}; read the current "
                "plan with `remediate pending`"
            )
        return claims

    async def decide(
        self, kind: DecisionKind, request: DecisionRequest, load_settings: KeyLoader
    ) -> ApprovalDecision:
        if not workflow.patched(SIGNED_DECISIONS_PATCH):
            return await legacy_decide(self, kind, request)
        if not self.settings.verify_keys:
            self.configure(await load_settings())
        claims = await self._claims(kind, request, load_settings)
        self.used_tokens.add(claims.jti)
        earlier = self.closed.get(claims.gate)
        if earlier is not None:
            return self._duplicate(kind, claims, earlier)
        plan = await self._gate_for(claims)
        self._check_policy(claims)
        if kind == "reject":
            return self._close(
                plan, DecisionOutcome.REJECTED, claims.sub, claims.reason, approvers=[claims.sub]
            )
        return self._count_approval(plan, claims)

    async def _gate_for(self, claims: DecisionClaims) -> Plan:
        """The open plan this decision names; an early one waits for the gate instance it
        names and applies only if that gate opens with the plan it names, while it is fresh."""
        if self.open_plan is None or claims.gate != self.instance:
            await workflow.wait_condition(
                lambda: self.run_finished or self.instance > claims.gate
                or (self.instance == claims.gate and self.open_plan is not None)
            )  # fmt: skip
        plan = self.open_plan
        if plan is None or claims.gate != self.instance:
            self._refuse_recorded(claims.sub, f"gate {claims.gate} never opened for it")
        assert plan is not None
        if claims.plan != plan.plan_id:
            self._refuse_recorded(
                claims.sub, f"plan {claims.plan} is not the plan that opened, {plan.plan_id}"
            )
        if workflow.now() >= claims.expires_at:
            self._refuse_recorded(claims.sub, "decision expired while waiting for its gate")
        return plan

    def _count_approval(self, plan: Plan, claims: DecisionClaims) -> ApprovalDecision:
        if claims.sub in self.approved_by:
            self.audit.record(
                "decision_duplicate",
                f"{claims.sub} already approved plan {plan.plan_id}; a quorum needs distinct "
                "approvers",
                actor=claims.sub,
            )
        else:
            self.approved_by.append(claims.sub)
        needed = self.approvals_required
        if len(self.approved_by) >= needed:
            approvers = list(self.approved_by)
            return self._close(
                plan, DecisionOutcome.APPROVED, ", ".join(approvers), claims.reason,
                approvers=approvers,
            )  # fmt: skip
        self.audit.record(
            "gate_approval_counted",
            f"plan {plan.plan_id} approved by {claims.sub}: {len(self.approved_by)} of "
            f"{needed} approvals",
            actor=claims.sub,
            plan_id=plan.plan_id,
            reason=claims.reason,
        )
        if self.listed:
            self.publish()  # the quorum so far, for the listing
        return ApprovalDecision(
            outcome=DecisionOutcome.COUNTED,
            plan_id=plan.plan_id,
            decided_by=claims.sub,
            decided_at=workflow.now(),
            reason=f"{len(self.approved_by)} of {needed} approvals",
            gate=self.instance,
            approvers=list(self.approved_by),
        )

    def _duplicate(
        self, kind: DecisionKind, claims: DecisionClaims, earlier: ApprovalDecision
    ) -> ApprovalDecision:
        same = (kind == "approve") == (earlier.outcome == DecisionOutcome.APPROVED)
        if same:
            self.audit.record(
                "decision_duplicate",
                f"{kind} from {claims.sub} for plan {earlier.plan_id} (gate {claims.gate}) "
                "repeats the decision already taken; ignored",
                actor=claims.sub,
            )
            return earlier
        self.audit.record(
            "decision_refused",
            f"{kind} from {claims.sub} arrived after plan {earlier.plan_id} (gate "
            f"{claims.gate}) was {earlier.outcome.value} by {earlier.decided_by}",
            actor=claims.sub,
        )
        raise ApplicationError(
            f"plan {earlier.plan_id} was already {earlier.outcome.value} by {earlier.decided_by}",
            type="GateAlreadyDecided",
        )

    async def _claims(
        self, kind: DecisionKind, request: DecisionRequest, load_settings: KeyLoader
    ) -> DecisionClaims:
        """The decision's claims (see `authentic`), verified with the keys as the worker's
        config lists them now: read again first unless read within a minute
        (workflows/key_reloads.py)."""
        claimed = request.approver or "unknown"
        unknown = ""
        try:
            claims = self.authentic(kind, request)
            if not workflow.patched(KEY_RELOAD_PATCH) or not self.key_reloads.due():
                return claims
        except UnknownKeyError as err:
            if not workflow.patched(KEY_RELOAD_PATCH):
                self._refuse_recorded(claimed, str(err))
            unknown = err.kid
        except TokenRefusedError as err:
            self._refuse_recorded(claimed, str(err))
        fresh = await self.key_reloads.reload(load_settings, unknown=bool(unknown))
        if fresh is not None:
            self._keys_read_again(fresh.verify_keys, unknown)
        try:
            return self.authentic(kind, request)
        except TokenRefusedError as err:
            self._refuse_recorded(claimed, str(err))

    def _keys_read_again(self, keys: list[str], unknown: str) -> None:
        """The gate's policy stays as the run began; only the keys that verify change. The
        audit says so when they changed, or when a decision named a key the run lacked."""
        before = self.settings.verify_keys
        self.settings = self.settings.model_copy(update={"verify_keys": keys})
        if unknown:
            known = {key_id(public_key(text)) for text in keys}
            self.audit.record(
                "verify_keys_read",
                f"a decision named signing key {unknown!r}, unknown to this run: the verify "
                f"keys were read again ({len(keys)} listed; that key "
                + ("is one of them)" if unknown in known else "is not)"),
            )
        elif set(keys) != set(before):
            added, removed = len(set(keys) - set(before)), len(set(before) - set(keys))
            self.audit.record(
                "verify_keys_read",
                f"the verify keys changed since this run read them: {added} added, "
                f"{removed} removed ({len(keys)} listed)",
            )

    def _check_policy(self, claims: DecisionClaims) -> None:
        group = self.settings.required_group
        if group not in claims.groups:
            self._refuse_recorded(claims.sub, f"{claims.sub} is not in the required group {group}")
        if self.settings.four_eyes and claims.sub == self.requested_by:
            self._refuse_recorded(
                claims.sub, f"{claims.sub} requested this run and cannot approve it"
            )

    def _verify_requester(self) -> bool:
        """Whether `requested_by` is who the approval service says started this run."""
        params, info = self.params, workflow.info()
        if info.parent is not None:
            return params.parent_verified
        try:
            claims = verify(
                params.requester_token,
                self.settings.verify_keys,
                audience="start",
                now=info.start_time,
                max_age=timedelta(seconds=self.settings.start_token_ttl_seconds),
            )
        except TokenRefusedError as err:
            self.audit.record("requester_unverified", f"{params.requested_by!r}: {err}")
            return False
        if (claims.sub, claims.wid, claims.input) != (
            params.requested_by,
            info.workflow_id,
            params.input_hash(),
        ):
            self.audit.record(
                "requester_unverified",
                f"start token for {claims.sub} on {claims.wid} does not match this run's input",
            )
            return False
        return True

    # -- refusals ----------------------------------------------------------------------

    def _refuse_recorded(self, claimed: str, reason: str) -> NoReturn:
        self.audit.record(
            "decision_refused", f"decision from {claimed!r} refused: {reason}", actor=claimed
        )
        raise ApplicationError(f"decision refused: {reason}", type="DecisionRefused")

    def _refuse_unrecorded(
        self, kind: str, request: DecisionRequest, reason: str, claims: DecisionClaims | None
    ) -> None:
        """A refusal in the validator: nothing reaches the run's history, so the worker logs
        and counts it (who it claimed to be, which run, why)."""
        claimed = claims.sub if claims else (request.approver or "unknown")
        info = workflow.info()
        workflow.logger.warning(
            "refused %s decision from %r for %s/%s: %s",
            kind, claimed, info.workflow_id, info.run_id, reason,
        )  # fmt: skip
        workflow.metric_meter().create_counter(
            REFUSALS_METRIC, "decisions refused before they reached a run's history"
        ).add(1, {"kind": kind})
        raise ApplicationError(
            f"decision refused: {reason}", type="DecisionRefused", non_retryable=True
        ) from None


def decision_summary(decision: ApprovalDecision) -> str:
    """How a gate closed, in words: the audit line's and the decision notification's."""
    return {
        DecisionOutcome.APPROVED: f"approved by {decision.decided_by}",
        DecisionOutcome.REJECTED: f"rejected by {decision.decided_by}",
        DecisionOutcome.TIMED_OUT: "timed out: aborting safely, nothing was changed",
        DecisionOutcome.RESOLVED: "closed: the alert resolved before approval",
        DecisionOutcome.DRY_RUN: f"dry run: {decision.reason}",
        DecisionOutcome.SUPERSEDED: f"superseded, not acted on: {decision.reason}",
        DecisionOutcome.COUNTED: f"approval counted from {decision.decided_by}",
    }[decision.outcome]
