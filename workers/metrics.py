"""The service's Prometheus metric objects, in one place because several routers count into
them (intake, approvals, Slack) and GET /metrics exports them. Defined once per process: the
prometheus_client registry is global and refuses a second metric of the same name."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from workflows.models import RunStatus

ALERTS = Counter("remediate_alerts_total", "Alerts received", ["source", "outcome"])
REJECTED = Counter("remediate_webhooks_rejected_total", "Webhooks refused", ["source", "reason"])
RUNS_STARTED = Counter("remediate_runs_started_total", "Runs started by alerts", ["runbook"])
COALESCE_FLUSHES = Counter(
    "remediate_coalesce_flushes_total",
    "Signals carrying batched duplicate alerts, by result (delivered, retried, failed)",
    ["result"],
)
COALESCED_LOST = Counter(
    "remediate_coalesced_alerts_lost_total",
    "Duplicate alerts answered 202 whose batch never reached their run (retries exhausted)",
)
DECISIONS = Counter("remediate_decisions_total", "Decisions via the API", ["kind", "result"])
GATES_PENDING = Gauge("remediate_gates_pending", "Gates awaiting approval")
KILL_SWITCH = Gauge(
    "remediate_kill_switch_engaged", "1 while remediations are paused (the envelope's switch)"
)
LEASES_HELD = Gauge("remediate_leases_held", "Targets a remediation holds the lease of, now")
GATE_OLDEST_WAIT = Gauge(
    "remediate_gate_oldest_wait_seconds",
    "How long the oldest gate awaiting approval has waited (0: none waits)",
)
RUN_OUTCOMES = Gauge(
    "remediate_runs_finished", "Finished remediations by outcome (from Temporal)", ["status"]
)
# The finished statuses RUN_OUTCOMES reports, counted from Temporal at each scrape.
OUTCOMES = (
    RunStatus.REMEDIATED,
    RunStatus.ESCALATED,
    RunStatus.STOPPED,
    RunStatus.CANCELLED,
    RunStatus.ABORTED,
    RunStatus.REJECTED,
    RunStatus.RESOLVED,
    RunStatus.NO_ACTION_NEEDED,
    RunStatus.DRY_RUN,
)
