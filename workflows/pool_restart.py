"""Runbook: connection pool exhausted ("Too many connections", "remaining connection slots are
reserved", "QueuePool limit exceeded", MongoPoolClearedError).

Postgres: diagnose usage from pg_stat_activity; no action below the alert threshold; plan the
termination of stale idle sessions (with the share of connections it touches); gate;
terminate; verify usage and health. Still exhausted: plan an app restart, gate, restart,
verify; escalate if that fails too. MongoDB: diagnose with serverStatus, remediate by restart.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.checks import CheckSpec
    from activities.deploy.models import RestartAppInput
    from activities.deploy.restart_hook import restart_app
    from activities.mongo.connections import get_mongo_connection_usage
    from activities.mongo.models import MongoTargetInput
    from activities.postgres.models import (
        ConnectionUsage,
        FindIdleSessionsInput,
        IdleSessions,
        TargetInput,
        TerminateSessionsInput,
    )
    from activities.postgres.sessions import (
        find_idle_sessions,
        get_connection_usage,
        terminate_sessions,
    )
    from activities.targets import TargetDescription
    from workflows.approval_gate import Replan
    from workflows.models import (
        DecisionOutcome,
        Effect,
        ExpectedImpact,
        Plan,
        RunbookInput,
        RunReport,
        RunStatus,
    )
    from workflows.names import POOL_RESTART
    from workflows.policies import (
        ACT_RETRY,
        HEARTBEAT_TIMEOUT,
        READ_RETRY,
        READ_TIMEOUT,
        STEP_TIMEOUT,
        batch_heartbeat_timeout,
    )
    from workflows.runbook import RunbookWorkflow


def terminate_effect(count: int, database: str) -> Effect:
    return Effect(
        what=f"terminate {count} idle sessions of {database} (each checked by pid and start "
        "time first); their clients reconnect",
        undoable=False,
    )


@workflow.defn(name="PoolRestartWorkflow")
class PoolRestartWorkflow(RunbookWorkflow):
    runbook = POOL_RESTART

    @workflow.run
    async def run(self, params: RunbookInput) -> RunReport:
        self.start()
        try:
            target = await self.describe_target()
            if target.kind == "postgres":
                return await self._postgres(target)
            if target.kind == "mongodb":
                return await self._mongo(target)
            return await self.finish(
                RunStatus.ABORTED,
                f"target {params.target!r} is a {target.kind} target; pool_restart needs "
                "a postgres or mongodb target",
            )
        except asyncio.CancelledError as err:
            await self.cancel_path(err)
            raise
        except ActivityError as err:
            if await self.cancel_path(err):
                raise
            return await self.step_failed(err, "step failed, nothing further was done")

    async def _usage(self, target: TargetDescription) -> ConnectionUsage:
        return await workflow.execute_activity(
            get_connection_usage,
            TargetInput(target=target.target),
            start_to_close_timeout=READ_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=READ_RETRY,
        )

    async def _idle(self, target: TargetDescription) -> IdleSessions:
        return await workflow.execute_activity(
            find_idle_sessions,
            FindIdleSessionsInput(
                target=target.target,
                idle_older_than_seconds=target.pool_restart.idle_older_than_seconds,
            ),
            start_to_close_timeout=READ_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=READ_RETRY,
        )

    def _replan(self, target: TargetDescription, plan: Plan) -> Replan:
        """A fresh look while the gate waits (or before acting on an old approval): is the
        pool still exhausted, and is the planned action still the one to take?"""

        async def why_not() -> str | None:
            config = target.pool_restart
            usage = await self._usage(target)
            if usage.usage < config.usage_threshold:
                return f"connections are at {usage.usage:.0%}, below the threshold: no action"
            idle = await self._idle(target)
            if plan.action == "restart_app":
                if idle.sessions:
                    return (
                        f"{len(idle.sessions)} sessions are now idle for more than "
                        f"{config.idle_older_than_seconds}s: terminating them is lighter "
                        "than a restart"
                    )
                return None
            planned = {(s["pid"], s["backend_start"]) for s in plan.parameters["sessions"]}
            now_idle = (s.model_dump(mode="json") for s in idle.sessions)
            still = {(s["pid"], s["backend_start"]) for s in now_idle} & planned
            if not still:
                return "none of the planned sessions is still idle"
            return None

        return why_not

    async def _postgres(self, target: TargetDescription) -> RunReport:
        config = target.pool_restart
        usage = await self._usage(target)
        self.audit.record(
            "diagnosis",
            f"{usage.total}/{usage.max_connections} connections in use ({usage.usage:.0%}); "
            f"alert threshold {config.usage_threshold:.0%}",
            usage=usage.model_dump(mode="json"),
        )
        if usage.usage < config.usage_threshold:
            return await self.finish(
                RunStatus.NO_ACTION_NEEDED,
                f"no action needed: {usage.usage:.0%} of connections in use, below the "
                f"{config.usage_threshold:.0%} threshold",
            )
        self.set_status(RunStatus.PLANNING, f"Planning: {usage.usage:.0%} connections in use")
        idle = await self._idle(target)
        if not idle.sessions:
            self.audit.record(
                "diagnosis",
                f"no session idle for more than {config.idle_older_than_seconds}s: "
                "terminating sessions cannot help",
            )
            return await self._restart(
                target, "pool exhausted with no stale idle sessions", fresh_look=True
            )
        # Against the database's own connections: on a shared cluster the others are not
        # this plan's (runs recorded before the engine counted them divide by the cluster's).
        population = usage.database_total if usage.database_total is not None else usage.total
        share = len(idle.sessions) / max(1, population)
        plan = Plan(
            runbook=self.runbook,
            action="terminate_idle_sessions",
            target=target.target,
            parameters={
                "database": usage.database,
                "idle_older_than_seconds": config.idle_older_than_seconds,
                "sessions": [s.model_dump(mode="json") for s in idle.sessions],
            },
            expected_impact=ExpectedImpact(
                summary=f"terminate {len(idle.sessions)} sessions idle > "
                f"{config.idle_older_than_seconds}s ({share:.0%} of {population} connections"
                + (f" to {usage.database}" if usage.database_total is not None else "")
                + ")",
                affected=len(idle.sessions),
                share_of_total=round(share, 4),
                effects=self.effects(terminate_effect(len(idle.sessions), usage.database)),
            ),
        )
        decision = await self.approve_plan(plan, self._replan(target, plan))
        if self.replanning(decision):
            return await self._postgres(target)
        if decision.outcome != DecisionOutcome.APPROVED:
            return await self.not_approved(decision.outcome, plan)
        self.set_status(RunStatus.ACTING, f"Terminating {len(idle.sessions)} idle sessions")
        result = await workflow.execute_activity(
            terminate_sessions,
            TerminateSessionsInput(
                target=target.target,
                sessions=idle.sessions,
                idle_older_than_seconds=config.idle_older_than_seconds,
                batch_size=config.terminate_batch_size,
                batch_pause_seconds=config.terminate_batch_pause_seconds,
            ),
            start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=batch_heartbeat_timeout(config.terminate_batch_pause_seconds),
            retry_policy=ACT_RETRY,
        )
        unreported = (
            f"{len(result.terminated_unreported)} of them by an attempt that died before "
            "reporting; "
            if result.terminated_unreported
            else ""
        )
        self.audit.record(
            "action",
            f"terminated {len(result.terminated)} sessions ({unreported}"
            f"{len(result.already_gone)} already gone, {len(result.skipped_no_longer_idle)} "
            "became active and were spared)",
            result=result.model_dump(),
        )
        verified = await self.verify(self._checks(target), config)
        if verified.passed:
            return await self.finish(
                RunStatus.REMEDIATED,
                f"remediated: {len(result.terminated)} idle sessions terminated, usage below "
                f"{config.usage_threshold:.0%} and healthy",
            )
        return await self._restart(target, "still exhausted after terminating idle sessions")

    async def _mongo(self, target: TargetDescription) -> RunReport:
        config = target.pool_restart
        usage = await workflow.execute_activity(
            get_mongo_connection_usage,
            MongoTargetInput(target=target.target),
            start_to_close_timeout=READ_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=READ_RETRY,
        )
        self.audit.record(
            "diagnosis",
            f"{usage.current} connections open, {usage.available} available "
            f"({usage.usage:.0%}); alert threshold {config.usage_threshold:.0%}",
            usage=usage.model_dump(mode="json"),
        )
        if usage.usage < config.usage_threshold:
            return await self.finish(
                RunStatus.NO_ACTION_NEEDED,
                f"no action needed: {usage.usage:.0%} of connections in use",
            )
        return await self._restart(target, f"mongodb connections at {usage.usage:.0%}")

    async def _restart(
        self, target: TargetDescription, why: str, fresh_look: bool = False
    ) -> RunReport:
        """Plan an application restart. `fresh_look`: the restart is planned because no
        session was idle long enough yet; while the gate waits the run looks again, and
        terminating sessions replaces the restart once it is possible."""
        if not target.has_restart_hook:
            return await self.escalate(f"{why}, and {target.target} has no restart hook")
        plan = Plan(
            runbook=self.runbook,
            action="restart_app",
            target=target.target,
            parameters={"hook": "configured restart hook", "why": why},
            expected_impact=ExpectedImpact(
                summary="restart the application to rebuild its connection pool; "
                "in-flight requests fail once",
                affected=1,
                effects=self.effects(
                    Effect(
                        what=f"restart {target.target}'s application through its restart hook; "
                        "in-flight requests fail once",
                        undoable=False,
                    )
                ),
            ),
        )
        replan = self._replan(target, plan) if fresh_look else None
        decision = await self.approve_plan(plan, replan)
        if self.replanning(decision):
            return await self._postgres(target)
        if decision.outcome != DecisionOutcome.APPROVED:
            return await self.not_approved(decision.outcome, plan)
        self.set_status(RunStatus.ACTING, f"Restarting the application of {target.target}")
        info = workflow.info()
        result = await workflow.execute_activity(
            restart_app,
            RestartAppInput(
                target=target.target,
                idempotency_key=f"{info.workflow_id}/{info.run_id}/{plan.plan_id}",
            ),
            start_to_close_timeout=STEP_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=ACT_RETRY,
        )
        self.audit.record(
            "action",
            "restart hook " + ("had already run" if result.already_done else "called"),
            result=result.model_dump(),
        )
        verified = await self.verify(self._checks(target), target.pool_restart)
        if verified.passed:
            return await self.finish(RunStatus.REMEDIATED, "remediated by an application restart")
        return await self.escalate(
            f"{target.target} still unhealthy after the application restart: "
            + "; ".join(f"{o.check}: {o.observed}" for o in verified.last if not o.passed)
        )

    def _checks(self, target: TargetDescription) -> list[CheckSpec]:
        kind = "pg_usage_below" if target.kind == "postgres" else "mongo_usage_below"
        checks = [
            CheckSpec(
                kind=kind, target=target.target, threshold=target.pool_restart.usage_threshold
            )
        ]
        if target.has_health_check:
            checks.append(CheckSpec(kind="http_healthy", target=target.target))
        return checks
