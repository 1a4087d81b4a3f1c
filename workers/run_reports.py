"""A run's report and incident record as Temporal has them: one way to read them, for the
CLI (`remediate report`), the HTTP API (GET /runs/{id}/report) and the run page.

A completed run's report is its result, read from the run's close event alone (one
history call, no worker involved); a run still going, or one that ended without a result
(cancelled, failed), answers the `report` query (a worker replays it).
"""

from __future__ import annotations

from temporalio.client import Client, WorkflowExecutionStatus

from activities.config import ConfigError, EngineConfig, load_config
from activities.links import run_page_url
from workers.approvals import remediation_run
from workflows.incident_models import IncidentRecord
from workflows.incident_record import incident_record
from workflows.models import RunReport
from workflows.runbook import RunbookWorkflow


async def run_report(client: Client, workflow_id: str) -> RunReport:
    """The run's final report, or its report so far; DecisionError 404 when there is no such
    run (or it is no runbook's run)."""
    described = await remediation_run(client, workflow_id)
    handle = client.get_workflow_handle(workflow_id, run_id=described.run_id, result_type=RunReport)
    if described.status == WorkflowExecutionStatus.COMPLETED:
        report: RunReport = await handle.result(follow_runs=False)
        return report
    return await handle.query(RunbookWorkflow.report)


async def run_incident_record(
    client: Client, workflow_id: str, config: EngineConfig | None = None
) -> IncidentRecord:
    """The run's incident record, linked to its page when `config` says where pages are
    served (`[pages] public_url`). What the run page shows, and the Markdown or JSON that
    `remediate report` and GET /runs/{id}/report give."""
    report = await run_report(client, workflow_id)
    link = run_page_url(config, workflow_id) if config is not None else None
    return incident_record(report, link)


def config_if_any() -> EngineConfig | None:
    """The engine's config where this process has one: a reader of reports needs none (the
    run page's link is all it adds)."""
    try:
        return load_config()
    except ConfigError:
        return None
