"""`remediate`: start runbooks, see what awaits approval, approve or reject, follow a run.

The caller's identity comes from their token (REMEDIATE_TOKEN or --token-file), checked
against the hashed tokens in the config; decisions are minted and signed for that identity.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)
from temporalio.service import RPCError, RPCStatusCode

from activities.approval_auth import AuthenticationFailedError, DecisionKind, identify
from activities.config import ConfigError, load_config
from activities.safety import (
    SAFETY_WORKFLOW_TYPE,
    PauseRequest,
    SafetyStatus,
    safety_workflow_id,
)
from workers.api_client import ApprovalApi
from workers.approvals import DecisionError, decide, end_hold, pending_gates
from workers.settings import Settings, connect
from workflows.models import ApprovalDecision, RunbookInput, RunReport, RunStatus
from workflows.names import (
    RUNBOOK_WORKFLOW_TYPES,
    SA_REQUESTED_BY,
    SA_RUNBOOK,
    SA_STATUS,
    SA_TARGET,
    workflow_id_for,
)
from workflows.runbook import RunbookWorkflow

app = typer.Typer(help="Automated remediation with approval gates.", no_args_is_help=True)
T = TypeVar("T")

TokenFile = Annotated[
    Path | None, typer.Option(help="file holding your token (default: $REMEDIATE_TOKEN)")
]
JsonFlag = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except (ConfigError, AuthenticationFailedError) as err:
        raise _fail(str(err)) from None
    except RPCError as err:
        if err.status == RPCStatusCode.DEADLINE_EXCEEDED:
            raise _fail("no answer within 30 s: is the remediation worker running?") from None
        raise _fail(f"Temporal refused the request: {err.message}") from None
    except RuntimeError as err:
        if "connect" in str(err).lower():
            raise _fail(f"cannot reach Temporal at {Settings().temporal_address}") from None
        raise


def _token(token_file: Path | None) -> str:
    token = token_file.read_text().strip() if token_file else os.environ.get("REMEDIATE_TOKEN")
    if not token:
        raise _fail("no credential: set REMEDIATE_TOKEN or pass --token-file")
    return token


def _emit(data: Any, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, indent=2, default=str) if as_json else text)


@app.command()
def start(
    runbook: str,
    target: Annotated[str, typer.Option(help="target name from the config")],
    param: Annotated[list[str] | None, typer.Option(help="k=v, repeatable")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="plan only, act on nothing")] = False,
    reason: Annotated[str, typer.Option(help="why this run")] = "",
    token_file: TokenFile = None,
) -> None:
    """Start RUNBOOK on a target; prints the workflow id (an existing run is reused)."""
    if runbook not in RUNBOOK_WORKFLOW_TYPES:
        raise _fail(f"unknown runbook {runbook!r}; known: {', '.join(RUNBOOK_WORKFLOW_TYPES)}")
    config = load_config()
    config.target(target)  # unknown target: a clear error before anything starts
    requested_by = identify(config, _token(token_file))
    parameters = dict(p.split("=", 1) for p in param or [] if "=" in p)
    if len(parameters) != len(param or []):
        raise _fail("parameters are k=v")
    params = RunbookInput(
        target=target, requested_by=requested_by, dry_run=dry_run, reason=reason,
        parameters=parameters,
    )  # fmt: skip

    async def go() -> str:
        client = await connect()
        handle = await client.start_workflow(
            RUNBOOK_WORKFLOW_TYPES[runbook],
            params,
            id=workflow_id_for(runbook, target),
            task_queue=Settings().task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(SA_RUNBOOK, runbook),
                    SearchAttributePair(SA_TARGET, target),
                    SearchAttributePair(SA_REQUESTED_BY, requested_by),
                    SearchAttributePair(SA_STATUS, RunStatus.DIAGNOSING.value),
                ]
            ),
            static_summary=f"{runbook} on {target}" + (" (dry run)" if dry_run else ""),
        )
        return handle.id

    typer.echo(_run(go()))


@app.command()
def pending(as_json: JsonFlag = False) -> None:
    """Gates awaiting approval, with their plans."""
    api_url = Settings().api_url
    try:
        if api_url:
            gates = _run(ApprovalApi(api_url, _token(None)).pending())
        else:
            gates = _run(_with_client(pending_gates))
    except DecisionError as err:
        raise _fail(str(err)) from None
    lines = [
        f"{g.workflow_id}  plan {g.plan.plan_id}  needs {g.required_group}  "
        f"requested by {g.requested_by}\n    {g.plan.describe()}\n"
        f"    aborts at {g.abort_at:%H:%M:%S}"
        for g in gates
    ]
    _emit([g.model_dump(mode="json") for g in gates], as_json, "\n".join(lines) or "none")


async def _with_client(fn: Callable[[Client], Awaitable[T]]) -> T:
    return await fn(await connect())


def _decide(workflow_id: str, kind: DecisionKind, reason: str, token_file: Path | None) -> None:
    token = _token(token_file)
    api_url = Settings().api_url

    async def go() -> ApprovalDecision:
        if api_url:
            return await ApprovalApi(api_url, token).decide(workflow_id, kind, reason)
        # Without an approval service, the CLI is one: it needs the signing key.
        return await decide(await connect(), load_config(), token, workflow_id, kind, reason)

    try:
        decision = _run(go())
    except DecisionError as err:
        raise _fail(str(err)) from None
    outcome, by = decision.outcome.value, decision.decided_by
    typer.echo(f"{outcome} plan {decision.plan_id} of {workflow_id} as {by}")


@app.command()
def approve(
    workflow_id: str,
    reason: Annotated[str, typer.Option(help="recorded in the audit trail")] = "",
    token_file: TokenFile = None,
) -> None:
    """Approve the open gate of WORKFLOW_ID, as the identity of your token."""
    _decide(workflow_id, "approve", reason, token_file)


@app.command()
def reject(
    workflow_id: str,
    reason: Annotated[str, typer.Option(help="why; recorded in the audit trail")],
    token_file: TokenFile = None,
) -> None:
    """Reject the open gate of WORKFLOW_ID; the runbook aborts safely."""
    _decide(workflow_id, "reject", reason, token_file)


@app.command(name="end-hold")
def end_hold_command(
    workflow_id: str,
    reason: Annotated[str, typer.Option(help="recorded in the audit trail")] = "",
    token_file: TokenFile = None,
) -> None:
    """End the read-only hold of WORKFLOW_ID early; its exit plan then waits for approval."""
    token = _token(token_file)
    api_url = Settings().api_url

    async def go() -> str:
        if api_url:
            return await ApprovalApi(api_url, token).end_hold(workflow_id, reason)
        return await end_hold(await connect(), load_config(), token, workflow_id, reason)

    try:
        typer.echo(_run(go()))
    except DecisionError as err:
        raise _fail(str(err)) from None


@app.command()
def status(workflow_id: str, as_json: JsonFlag = False) -> None:
    """Steps so far, current state, and the report when done."""

    async def go(client: Client) -> RunReport:
        handle = client.get_workflow_handle(workflow_id, result_type=RunReport)
        described = await handle.describe()
        if described.status == WorkflowExecutionStatus.COMPLETED:
            report: RunReport = await handle.result()
            return report
        return await handle.query(RunbookWorkflow.report)

    report = _run(_with_client(go))
    lines = [f"{report.workflow_id}: {report.status.value} - {report.summary}"]
    lines += [f"  {s.at:%H:%M:%S} {s.kind:<22} {s.actor:<14} {s.summary}" for s in report.steps]
    _emit(report.model_dump(mode="json"), as_json, "\n".join(lines))


@app.command(name="list")
def list_runs(
    as_json: JsonFlag = False, limit: Annotated[int, typer.Option(help="how many")] = 20
) -> None:
    """Recent remediations."""

    async def go(client: Client) -> list[dict[str, Any]]:
        types = ", ".join(f"'{t}'" for t in RUNBOOK_WORKFLOW_TYPES.values())
        rows = []
        async for execution in client.list_workflows(f"WorkflowType IN ({types})", limit=limit):
            attrs = execution.typed_search_attributes
            rows.append(
                {
                    "workflow_id": execution.id,
                    "run_id": execution.run_id,
                    "execution": execution.status.name if execution.status else "",
                    "status": attrs.get(SA_STATUS) or "",
                    "target": attrs.get(SA_TARGET) or "",
                    "requested_by": attrs.get(SA_REQUESTED_BY) or "",
                    "started": execution.start_time.isoformat(),
                }
            )
        return rows

    rows = _run(_with_client(go))
    text = "\n".join(
        f"{r['started'][:19]}  {r['workflow_id']:<28} {r['execution']:<10} {r['status']:<17} "
        f"by {r['requested_by']}"
        for r in rows
    )
    _emit(rows, as_json, text or "no remediations yet")


async def _safety(client: Client, update: str, request: PauseRequest) -> SafetyStatus:
    task_queue = Settings().task_queue
    handle = await client.start_workflow(
        SAFETY_WORKFLOW_TYPE,
        id=safety_workflow_id(task_queue),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    status: SafetyStatus = await handle.execute_update(
        update, request, result_type=SafetyStatus, rpc_timeout=timedelta(seconds=30)
    )
    return status


@app.command()
def pause(
    reason: Annotated[str, typer.Option(help="why; shown to every waiting run")],
    token_file: TokenFile = None,
) -> None:
    """Kill switch: no run acts until `remediate resume`; alerts are still taken."""
    who = identify(load_config(), _token(token_file))
    _run(_with_client(lambda c: _safety(c, "pause", PauseRequest(by=who, reason=reason))))
    typer.echo(f"paused by {who}: no remediation will act until `remediate resume`")


@app.command()
def resume(token_file: TokenFile = None) -> None:
    """Release the kill switch (engineering leads only, by default)."""
    config = load_config()
    who = identify(config, _token(token_file))
    group = config.safety.resume_group
    if group not in config.identities[who].groups:
        raise _fail(f"{who} is not in {group}, who may resume remediations")
    _run(_with_client(lambda c: _safety(c, "resume", PauseRequest(by=who))))
    typer.echo(f"resumed by {who}")


def main() -> None:
    code = 0
    try:
        app()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    # Skip interpreter teardown: the Temporal client's Rust threads can abort the process
    # while Python finalizes ("PyGILState_Release ... finalizing", temporalio/sdk-python#300),
    # turning a successful command into exit -6. Everything the command does is done here.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
