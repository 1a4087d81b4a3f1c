"""The engine's own metrics, counted where runs happen: in the workflows, through the Temporal
SDK's metric meter, so they are exported on the worker's SDK metrics endpoint beside the SDK's
`temporal_*` metrics (REMEDIATE_WORKER_METRICS_ADDRESS). A replay (after a worker restart or
a cache eviction) counts nothing again: the SDK emits nothing while a workflow replays. A
workflow task that timed out or failed and ran again does count its new events again.

What a workflow cannot count well stays with the service's /metrics, computed from Temporal's
visibility at each scrape (`workers/metrics.py`): the gates open now, the runs finished by
status, the kill switch's state. A worker's counters reset when it restarts; use `increase()`
or `rate()` over them, summed across workers.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow

from workflows.names import RUNBOOK_WORKFLOW_TYPES

# Counters: Prometheus names as exported (the SDK adds no `_total` suffix by default).
RUNS_STARTED = "remediation_runs_started"
RUNS_FINISHED = "remediation_runs_finished"
GATES_OPENED = "remediation_gates_opened"
# Histograms, in seconds.
TIME_TO_APPROVE = "remediation_time_to_approve_seconds"
TIME_TO_REMEDIATE = "remediation_time_to_remediate_seconds"

# A person answers in minutes, an auto-approval in milliseconds; a remediation takes seconds
# (a pool restart) to an hour (a large restore).
APPROVE_BUCKETS = (1.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)
REMEDIATE_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)
HISTOGRAM_BUCKETS = {TIME_TO_APPROVE: APPROVE_BUCKETS, TIME_TO_REMEDIATE: REMEDIATE_BUCKETS}


def run_started(runbook: str, trigger: str) -> None:
    """`trigger`: the alert source that started the run, or "manual"."""
    workflow.metric_meter().create_counter(
        RUNS_STARTED, "Remediation runs started, by runbook and what started them"
    ).add(1, {"runbook": runbook, "trigger": trigger})


def run_finished(runbook: str, outcome: str, started_at: datetime, remediated: bool) -> None:
    """`outcome`: the run's final status (Remediated, Escalated, Rejected, ...). The time to
    remediate counts from the run's start to a verified fix, for remediated runs only."""
    meter = workflow.metric_meter()
    meter.create_counter(RUNS_FINISHED, "Remediation runs finished, by runbook and outcome").add(
        1, {"runbook": runbook, "outcome": outcome}
    )
    if remediated:
        meter.create_histogram_float(
            TIME_TO_REMEDIATE, "From a run's start to its verified fix", "s"
        ).record(_seconds(workflow.now() - started_at), {"runbook": runbook})


def gate_opened() -> None:
    workflow.metric_meter().create_counter(
        GATES_OPENED, "Approval gates opened (each plan put to a person's decision)"
    ).add(1, {"runbook": _RUNBOOKS.get(workflow.info().workflow_type, "other")})


def plan_approved(runbook: str, waited: timedelta, by_policy: bool) -> None:
    """From the gate opening to its approval; `by` tells a person's answer from a policy's
    (which answers as the plan is made)."""
    workflow.metric_meter().create_histogram_float(
        TIME_TO_APPROVE, "From a gate opening to the plan's approval", "s"
    ).record(
        _seconds(waited),
        {"runbook": runbook, "by": "policy" if by_policy else "person"},
    )


_RUNBOOKS = {wf_type: runbook for runbook, wf_type in RUNBOOK_WORKFLOW_TYPES.items()}


def _seconds(elapsed: timedelta) -> float:
    return max(elapsed.total_seconds(), 0.0)
