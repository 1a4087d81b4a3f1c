"""Runbook: roll production back to the last known-good deployment (runbook 000, "Service
Down": verify it is really down, then `vercel rollback` / Railway redeploy of the previous one).

1. Really down? Several probe rounds over every probe URL; a healthy or once-flapping
   service is left alone ("no action needed"). While a target it `depends_on` is being
   remediated, or just was, wait and ask again (workflows/dependencies.py).
2. The current and the last known-good release; none: escalate (never guess). An outage
   that does not follow a deploy (the current release created more than
   `deploy_window_seconds` before the outage started, or after it) escalates too
   (workflows/rollback_cause.py).
3. Plan from -> to (ages, commits, URLs); gate.
4. Roll back; idempotent: if production already serves the target release, nothing is done.
5. Verify: every probe healthy N times in a row, and the error rate below its limit when the
   target has a metrics endpoint. Failing: roll forward again if the route or config says
   so (`roll_forward_on_failure`), then escalate.
6. The report carries a timeline: triggered, detected, approved, rolled back, verified.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.checks import CheckSpec
    from activities.deploy.models import (
        Deployment,
        DeploymentSituation,
        FindDeploymentsInput,
        RollbackInput,
        RollbackResult,
    )
    from activities.deploy.releases import find_deployments, rollback_deployment
    from activities.http.models import AssessInput, DownAssessment
    from activities.http.probes import assess_down
    from activities.targets import TargetDescription
    from workflows.approval_gate import Replan
    from workflows.dependencies import OPEN_RUNS_PATCH, Waited, wait_for_dependencies
    from workflows.models import (
        DecisionOutcome,
        Effect,
        ExpectedImpact,
        Plan,
        RunbookInput,
        RunReport,
        RunStatus,
    )
    from workflows.names import ROLLBACK
    from workflows.policies import HEARTBEAT_TIMEOUT, MAX_REPLANS, READ_RETRY, STEP_TIMEOUT
    from workflows.rollback_cause import RECENCY_PATCH, judge, outage_start
    from workflows.runbook import RunbookWorkflow
    from workflows.target_lease import KillSwitchStop

# Deploy APIs rate-limit: retries wait the vendor's Retry-After (next_retry_delay) and give
# up after a bounded total (schedule-to-close), then the run escalates.
DEPLOY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=60)
)
DEPLOY_READ_TOTAL = timedelta(minutes=5)


def _is_drift(err: ActivityError) -> bool:
    return isinstance(err.cause, ApplicationError) and err.cause.type == "PlanDrift"


@workflow.defn(name="RollbackWorkflow")
class RollbackWorkflow(RunbookWorkflow):
    runbook = ROLLBACK

    @workflow.run
    async def run(self, params: RunbookInput) -> RunReport:
        self.start()
        self.mark("triggered", workflow.info().start_time)
        try:
            target = await self.describe_target()
            if target.deploy_provider is None:
                return await self.finish(
                    RunStatus.ABORTED,
                    f"bad input: target {target.target!r} has no [deploy] provider to roll back",
                )
            return await self._rollback(target)
        except asyncio.CancelledError as err:
            await self.cancel_path(err)
            raise
        except ActivityError as err:
            if await self.cancel_path(err):
                raise
            return await self.step_failed(err, "rollback step failed")

    async def _rollback(self, target: TargetDescription, after_wait: bool = False) -> RunReport:
        """Diagnose, plan, approve, act, verify. `after_wait`: this diagnosis follows a wait
        for a target it depends on."""
        assessment = await self._assess(target)
        if not assessment.down:
            return await self.finish(
                RunStatus.NO_ACTION_NEEDED,
                f"no action needed: {target.target} is not down ({assessment.describe()})"
                + (" after the remediation of a target it depends on" if after_wait else ""),
            )
        self.mark("detected")
        waited = await wait_for_dependencies(self, target)
        if waited.outcome == Waited.GAVE_UP:
            return await self.escalate(
                f"{target.target} is down while a target it depends on is still being "
                f"remediated: {waited.detail}; not acting on what may be its symptom "
                f"({assessment.describe()})"
            )
        if waited.outcome == Waited.WAITED:
            # The dependency's fix may have fixed this too.
            return await self._rollback(target, after_wait=True)
        self.set_status(RunStatus.PLANNING, f"{target.target} is down; finding a good release")
        situation = await self._find(target)
        if workflow.patched(RECENCY_PATCH):
            start = outage_start(self.params.alert, self.timeline["detected"])
            window = timedelta(seconds=target.rollback.deploy_window_seconds)
            cause = judge(situation.current, start, window)
            self.audit.record("diagnosis", cause.summary, **cause.details())
            if not cause.follows_deploy:
                return await self.escalate(
                    f"{cause.summary}; {target.target} is down: {assessment.describe()}"
                )
        last_good = situation.last_good
        if last_good is None:
            skipped = ", ".join(situation.skipped) or "none"
            return await self.escalate(
                f"{target.target} is down and there is no known-good release before "
                f"{situation.current.describe()} among the last {situation.examined} "
                f"(passed over: {skipped}); not guessing"
            )
        plan = self._plan(target, situation, last_good)
        decision = await self.approve_plan(plan, self._replan(target, situation, last_good))
        if self.replanning(decision):
            return await self._rollback(target)
        if decision.outcome != DecisionOutcome.APPROVED:
            return await self.not_approved(decision.outcome, plan)
        self.mark("approved")
        if target.depends_on and workflow.patched(OPEN_RUNS_PATCH):
            # A dependency's remediation may have started since the diagnosis: this outage
            # may be its symptom. Not acting on the approved plan; diagnosing again.
            again = await wait_for_dependencies(self, target)
            if again.outcome != Waited.CLEAR:
                await self.release_lease(acted=False)
                self.audit.record(
                    "approved_plan_dropped",
                    f"plan {plan.plan_id} not acted on: a target {target.target} depends on "
                    "was being remediated; diagnosing again",
                )
                if again.outcome == Waited.GAVE_UP or self.replans >= MAX_REPLANS:
                    return await self.escalate(
                        f"{target.target} is down while a target it depends on is being "
                        f"remediated: {again.detail or 'it kept changing'}; not acting on "
                        "what may be its symptom"
                    )
                self.replans += 1
                return await self._rollback(target, after_wait=True)
        self.set_status(RunStatus.ACTING, f"Rolling {target.target} back to {last_good.id}")
        try:
            result = await self._switch(
                target, last_good, plan.plan_id, "rollback", situation.current.id
            )
        except ActivityError as err:
            if not _is_drift(err) or self.replans >= MAX_REPLANS:
                raise
            # The world moved since the plan (a hotfix went out): diagnose again from the
            # start; a new plan needs a new decision.
            self.replans += 1
            self.audit.record("plan_drift", f"{err.cause}; diagnosing again")
            return await self._rollback(target)
        self.audit.record(
            "action",
            f"production already served {last_good.id}; nothing done"
            if result.already_current
            else f"rolled back to {last_good.describe()} in {result.elapsed_seconds:.1f}s",
            result=result.model_dump(mode="json"),
        )
        self.mark("rolled_back")
        verified = await self.verify(self._checks(target), target.rollback)
        if verified.passed:
            self.mark("verified")
            return await self.finish(
                RunStatus.REMEDIATED,
                f"remediated: {target.target} rolled back from {situation.current.id} to "
                f"{last_good.id}; healthy {verified.consecutive} checks in a row",
            )
        failing = "; ".join(f"{o.check}: {o.observed}" for o in verified.last if not o.passed)
        if self._roll_forward(target):
            try:
                await self.guard("rolling forward")
            except KillSwitchStop as stop:
                return await self.stopped(
                    stop,
                    f"{target.target} is still unhealthy ({failing}) on {last_good.id}; it was "
                    f"not rolled forward to {situation.current.id}.",
                )
            # Compensation of our own switch, right after it: no other plan to check against
            # (on Railway the rolled-back release even runs under a new deployment id).
            await self._switch(target, situation.current, plan.plan_id, "roll-forward", "")
            self.audit.record(
                "compensation", f"rolled forward to {situation.current.describe()} again"
            )
            return await self.escalate(
                f"{target.target} still unhealthy after rolling back to {last_good.id} "
                f"({failing}); rolled forward to {situation.current.id} again"
            )
        return await self.escalate(
            f"{target.target} still unhealthy after rolling back to {last_good.id} "
            f"({failing}); production left on {last_good.id}"
        )

    def _replan(
        self, target: TargetDescription, situation: DeploymentSituation, to: Deployment
    ) -> Replan:
        """A fresh look while the gate waits (or before acting on an old approval): still
        down, and still the same releases?"""

        async def why_not() -> str | None:
            assessment = await self._assess(target)
            if not assessment.down:
                return f"{target.target} is not down any more ({assessment.describe()})"
            now = await self._find(target)
            if now.current.id != situation.current.id:
                return f"production now serves {now.current.id}, not {situation.current.id}"
            if now.last_good is None or now.last_good.id != to.id:
                found = now.last_good.id if now.last_good else "none"
                return f"the last known-good release is now {found}, not {to.id}"
            return None

        return why_not

    async def _assess(self, target: TargetDescription) -> DownAssessment:
        """Runbook 000 step 1: is it really down? (every probe URL, several rounds)"""
        config = target.rollback
        assessment = await workflow.execute_activity(
            assess_down,
            AssessInput(
                target=target.target,
                rounds=config.probe_rounds,
                interval_seconds=config.probe_interval_seconds,
                down_rounds=config.down_rounds,
                timeout_seconds=config.probe_timeout_seconds,
            ),
            start_to_close_timeout=timedelta(
                seconds=config.probe_rounds
                * (config.probe_interval_seconds + config.probe_timeout_seconds * 10)
                + 30
            ),
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=READ_RETRY,
        )
        self.audit.record(
            "diagnosis", assessment.describe(), assessment=assessment.model_dump(mode="json")
        )
        return assessment

    async def _find(self, target: TargetDescription) -> DeploymentSituation:
        situation = await workflow.execute_activity(
            find_deployments,
            FindDeploymentsInput(target=target.target, history_limit=target.rollback.history_limit),
            start_to_close_timeout=STEP_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            schedule_to_close_timeout=DEPLOY_READ_TOTAL,
            retry_policy=DEPLOY_RETRY,
        )
        self.audit.record(
            "diagnosis",
            f"{situation.provider}: production serves {situation.current.describe()}; "
            + (
                f"last known good {situation.last_good.describe()}"
                if situation.last_good
                else "no known-good release before it"
            ),
            situation=situation.model_dump(mode="json"),
        )
        return situation

    async def _switch(
        self,
        target: TargetDescription,
        to: Deployment,
        plan_id: str,
        purpose: str,
        expected_current: str,
    ) -> RollbackResult:
        info = workflow.info()
        deadline = target.rollback.rollback_deadline_seconds
        return await workflow.execute_activity(
            rollback_deployment,
            RollbackInput(
                target=target.target,
                to=to,
                idempotency_key=f"{info.workflow_id}/{info.run_id}/{plan_id}/{purpose}",
                deadline_seconds=deadline,
                expected_current=expected_current,
            ),
            start_to_close_timeout=timedelta(seconds=deadline + 60),
            schedule_to_close_timeout=timedelta(seconds=deadline) + DEPLOY_READ_TOTAL,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=DEPLOY_RETRY,
        )

    def _plan(
        self, target: TargetDescription, situation: DeploymentSituation, to: Deployment
    ) -> Plan:
        now = workflow.now()
        current = situation.current

        def age(d: Deployment) -> str:
            return f"{(now - d.created_at).total_seconds() / 3600:.1f} h old"

        return Plan(
            runbook=self.runbook,
            action="rollback_deployment",
            target=target.target,
            parameters={
                "provider": situation.provider,
                "from": current.model_dump(mode="json"),
                "to": to.model_dump(mode="json"),
                "passed_over": situation.skipped,
                "roll_forward_on_failure": self._roll_forward(target),
            },
            expected_impact=ExpectedImpact(
                summary=f"production {current.describe()} ({age(current)}) -> "
                f"{to.describe()} ({age(to)})"
                + (
                    f"; passes over {len(situation.skipped)} bad releases"
                    if situation.skipped
                    else ""
                ),
                affected=1,
                reversible=True,
                whole_target=True,
                effects=self.effects(
                    Effect(
                        what=f"production switches from {current.id} to {to.id}",
                        undoable=True,
                        undo=f"promote {current.id} again"
                        + (
                            " (done automatically if verification fails)"
                            if self._roll_forward(target)
                            else ""
                        ),
                    )
                ),
            ),
        )

    def _roll_forward(self, target: TargetDescription) -> bool:
        wanted = self.params.parameters.get("roll_forward_on_failure")
        if wanted is None:
            return target.rollback.roll_forward_on_failure
        return wanted.lower() in ("1", "true", "yes")

    @staticmethod
    def _checks(target: TargetDescription) -> list[CheckSpec]:
        checks = [
            CheckSpec(kind="url_healthy", target=target.target, url=u) for u in target.probe_urls
        ]
        limit = target.rollback.max_error_rate
        if limit is not None and target.has_metrics:
            checks.append(CheckSpec(kind="error_rate_below", target=target.target, threshold=limit))
        return checks
