"""`remediate`: start runbooks, see what awaits approval, approve or reject, follow a run.

The caller's identity comes from their token (REMEDIATE_TOKEN or --token-file), checked
against the hashed tokens in the config; decisions are minted and signed for that identity.

A user error (bad input, an unknown name, a refused decision, an unreachable server) is one
line, `error: <what is wrong and what to do>`, with exit code 2: `_user_error` decides which
exceptions are those, in one place (`main`). Anything else is a bug: a plain traceback, exit 1.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from activities.safety_models import SafetyQuery, SafetyStatus, safety_workflow_id
from workers import report_commands
from workers.api_client import ApprovalApi
from workers.api_shapes import DecisionError, RunEndedError
from workers.settings import Settings, connect, temporal_target
from workflows.models import ApprovalDecision, GateView, RunReport
from workflows.names import (
    RUNBOOK_WORKFLOW_TYPES,
    SA_REQUESTED_BY,
    SA_STATUS,
    SA_TARGET,
)

# The Temporal SDK and the engine's own modules are imported by the commands that talk to
# Temporal directly (status, list, report, stats): most commands only call the service, and
# importing them all made every command take a second to start.
if TYPE_CHECKING:
    from temporalio.client import Client
    from temporalio.service import RPCError

    from activities.decision_tokens import DecisionKind

app = typer.Typer(
    help="Automated remediation with approval gates.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # a bug prints a plain traceback (see `main`)
)
T = TypeVar("T")
POLL_SECONDS = 0.5
DEFAULT_WAIT_SECONDS = 60

TokenFile = Annotated[
    Path | None, typer.Option(help="file holding your token (default: $REMEDIATE_TOKEN)")
]
JsonFlag = Annotated[bool, typer.Option("--json", help="machine-readable output")]
WaitFlag = Annotated[
    bool,
    typer.Option("--wait", help="if no gate is open yet, wait for one (up to --timeout seconds)"),
]
Timeout = Annotated[
    int | None,
    typer.Option(
        min=1,
        metavar="SECONDS",
        help=f"with --wait: how long to wait (default {DEFAULT_WAIT_SECONDS})",
    ),
]
DetailsFlag = Annotated[
    bool,
    typer.Option(
        "--details", help="also each plan's parameters (e.g. every session: pid, backend start)"
    ),
]


class UserError(Exception):
    """Something the user can fix: shown as one `error:` line, exit code 2."""


def _user_error(err: Exception) -> str | None:
    """The line telling the user what to fix, or None for a bug (shown with its traceback)."""
    from temporalio.service import RPCError

    from activities.approval_auth import AuthenticationFailedError
    from activities.config import ConfigError
    from workers.payload_codec import PayloadDecryptionError
    from workers.temporal_config import TemporalConfigError

    if isinstance(
        err,
        DecisionError
        | UserError
        | ConfigError
        | AuthenticationFailedError
        | TemporalConfigError
        | PayloadDecryptionError,  # a history sealed under keys this shell lacks
    ):
        return str(err)
    if isinstance(err, RPCError):
        return _rpc_error(err)
    if isinstance(err, ValidationError) and err.title == Settings.__name__:
        return "; ".join(_setting_error(e["loc"], e["msg"]) for e in err.errors())
    return None


def _setting_error(loc: tuple[int | str, ...], msg: str) -> str:
    return f"REMEDIATE_{'_'.join(str(part) for part in loc).upper()}: {msg}"


def _rpc_error(err: RPCError) -> str:
    from temporalio.service import RPCStatusCode

    if err.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
        return "Temporal got no answer in time: is the remediation worker running?"
    if err.status == RPCStatusCode.UNAVAILABLE:
        return f"lost Temporal at {temporal_target(Settings()).address}: is it running?"
    return f"Temporal refused the request: {err.message}"


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def _with_client(fn: Callable[[Client], Awaitable[T]]) -> T:
    return await fn(await connect(Settings()))


def _token(token_file: Path | None) -> str:
    if token_file is None:
        token = os.environ.get("REMEDIATE_TOKEN")
    else:
        try:
            token = token_file.read_text().strip()
        except OSError as err:
            raise UserError(f"cannot read --token-file {token_file}: {err.strerror}") from None
    if not token:
        raise UserError("no credential: set REMEDIATE_TOKEN or pass --token-file")
    return token


def _no_such_run(workflow_id: str) -> UserError:
    return UserError(f"no remediation {workflow_id!r}; `remediate list` shows the runs")


def _emit(data: Any, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def _parameters(pairs: list[str]) -> dict[str, str]:
    bad = [p for p in pairs if "=" not in p or p.startswith("=")]
    if bad:
        raise UserError(f"--param takes key=value, not {bad[0]!r}")
    return dict(p.split("=", 1) for p in pairs)


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
        known = ", ".join(RUNBOOK_WORKFLOW_TYPES)
        raise UserError(f"unknown runbook {runbook!r}; known: {known}")
    parameters = _parameters(param or [])
    api = ApprovalApi(_api_url(), _token(token_file))
    result = _run(api.start(runbook, target, parameters, dry_run=dry_run, reason=reason))
    typer.echo(result.workflow_id)


def _api_url() -> str:
    return Settings().api_url


async def _gates(token: str) -> ApprovalApi:
    """Gates are read and decided through the approval service, as the caller's identity:
    the CLI never signs anything itself."""
    return ApprovalApi(_api_url(), token)


def _wait_seconds(wait: bool, timeout: int | None) -> int:
    if timeout is not None and not wait:
        raise UserError("--timeout goes with --wait: add --wait, or drop --timeout")
    return (timeout or DEFAULT_WAIT_SECONDS) if wait else 0


async def _poll(probe: Callable[[], Awaitable[T]], seconds: float, waiting: str) -> T:
    """`probe()` every POLL_SECONDS until it returns something truthy or `seconds` have
    passed; its last value. `waiting` is said once, on stderr, if it has to wait."""
    deadline = time.monotonic() + seconds
    value = await probe()
    if not value and seconds:
        typer.echo(waiting, err=True)
    while not value and time.monotonic() < deadline:
        await asyncio.sleep(POLL_SECONDS)
        value = await probe()
    return value


def _parameter_lines(parameters: dict[str, Any]) -> list[str]:
    """A plan's parameters, one a line; a list (such as the sessions) one item a line."""
    lines = []
    for key, value in parameters.items():
        if isinstance(value, list):
            lines.append(f"    {key} ({len(value)}):")
            lines += [f"      {_flat(item)}" for item in value]
        else:
            lines.append(f"    {key}: {_flat(value)}")
    return lines


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        return "  ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _gate_text(gate: GateView, details: bool) -> str:
    lines = [
        f"{gate.workflow_id}  plan {gate.plan.plan_id}  needs {gate.required_group}  "
        f"requested by {gate.requested_by}",
        f"    {gate.plan.describe()}",
        *(f"      - {e.describe()}" for e in gate.plan.expected_impact.effects),
        f"    aborts at {gate.abort_at:%H:%M:%S}",
    ]
    return "\n".join(lines + (_parameter_lines(gate.plan.parameters) if details else []))


@app.command()
def pending(
    as_json: JsonFlag = False,
    details: DetailsFlag = False,
    wait: WaitFlag = False,
    timeout: Timeout = None,
    token_file: TokenFile = None,
) -> None:
    """Gates awaiting approval, with their plans (--json: everything, with each plan's
    parameters).

    With --wait, if no gate is open, waits until one opens; if none opens within --timeout
    seconds, prints "none" ([] with --json) and exits 1.
    """
    seconds = _wait_seconds(wait, timeout)
    token = _token(token_file) if Settings().api_url else ""  # reading directly needs none

    async def go() -> list[GateView]:
        gates = await _gates(token)
        return await _poll(gates.pending, seconds, f"waiting up to {seconds} s for a gate")

    found = _run(go())
    text = "\n".join(_gate_text(g, details) for g in found) or "none"
    _emit([g.model_dump(mode="json") for g in found], as_json, text)
    if seconds and not found:
        raise typer.Exit(1)


async def _gate_of(gates: ApprovalApi, workflow_id: str, seconds: int) -> GateView:
    """The gate open on WORKFLOW_ID, waiting up to `seconds` for one: a run between two
    gates, or a child run (read_only's) that its parent has yet to start."""
    seen = False

    async def probe() -> GateView | None:
        nonlocal seen
        try:
            gate = await gates.open_gate(workflow_id)
        except RunEndedError as err:
            raise UserError(f"{err}; `remediate status {workflow_id}` shows how it ended") from None
        except DecisionError as err:
            if err.status != 404:
                raise
            if not seconds:
                raise _no_such_run(workflow_id) from None
            return None  # not started yet, perhaps: keep waiting
        seen = True
        return gate

    gate = await _poll(probe, seconds, f"waiting up to {seconds} s for a gate on {workflow_id}")
    if gate is None:
        raise _no_gate(workflow_id, seconds, seen)
    return gate


def _no_gate(workflow_id: str, seconds: int, seen: bool) -> UserError:
    if not seen:
        return _no_such_run(workflow_id)
    status = f"`remediate status {workflow_id}` shows where it is"
    if seconds:
        return UserError(f"no gate opened on {workflow_id} within {seconds} s; {status}")
    return UserError(
        f"{workflow_id} has no gate awaiting a decision; {status}, and --wait waits for its "
        "next gate"
    )


def _decide(
    workflow_id: str, kind: DecisionKind, reason: str, token_file: Path | None, seconds: int
) -> None:
    token = _token(token_file)

    async def go() -> ApprovalDecision:
        gates = await _gates(token)
        gate = await _gate_of(gates, workflow_id, seconds)
        if seconds:
            typer.echo(f"open gate: plan {gate.plan.plan_id}: {gate.plan.describe()}", err=True)
        return await gates.decide(workflow_id, kind, reason, gate.plan.plan_id)

    decision = _run(go())
    outcome, by = decision.outcome.value, decision.decided_by
    typer.echo(f"{outcome} plan {decision.plan_id} of {workflow_id} as {by}")


@app.command()
def approve(
    workflow_id: str,
    reason: Annotated[str, typer.Option(help="recorded in the audit trail")] = "",
    wait: WaitFlag = False,
    timeout: Timeout = None,
    token_file: TokenFile = None,
) -> None:
    """Approve the open gate of WORKFLOW_ID, as the identity of your token.

    With --wait, if no gate is open yet (a multi-gate runbook opens its next gate a few
    seconds after an approval), waits for one, then approves it; exits 2 if the run ends or
    no gate opens within --timeout seconds.
    """
    _decide(workflow_id, "approve", reason, token_file, _wait_seconds(wait, timeout))


@app.command()
def reject(
    workflow_id: str,
    reason: Annotated[str, typer.Option(help="why; recorded in the audit trail")],
    wait: WaitFlag = False,
    timeout: Timeout = None,
    token_file: TokenFile = None,
) -> None:
    """Reject the open gate of WORKFLOW_ID; the runbook aborts safely.

    With --wait, if no gate is open yet, waits for one, then rejects it; exits 2 if the run
    ends or no gate opens within --timeout seconds.
    """
    _decide(workflow_id, "reject", reason, token_file, _wait_seconds(wait, timeout))


@app.command(name="end-hold")
def end_hold_command(
    workflow_id: str,
    reason: Annotated[str, typer.Option(help="recorded in the audit trail")] = "",
    token_file: TokenFile = None,
) -> None:
    """End the read-only hold of WORKFLOW_ID early; its exit plan then waits for approval."""
    token = _token(token_file)

    async def go() -> str:
        try:
            return await (await _gates(token)).end_hold(workflow_id, reason)
        except DecisionError as err:
            if err.status == 404:
                raise _no_such_run(workflow_id) from None
            raise

    typer.echo(_run(go()))


@app.command()
def status(workflow_id: str, as_json: JsonFlag = False) -> None:
    """Steps so far, current state, and the report when done (for the safety envelope,
    `remediation-safety-<task queue>`: the kill switch and who paused or resumed it)."""
    if workflow_id == safety_workflow_id(Settings().task_queue):
        _switch_status(workflow_id, as_json)
        return

    from temporalio.client import WorkflowExecutionStatus
    from temporalio.service import RPCError, RPCStatusCode

    from workflows.runbook import RunbookWorkflow

    async def go(client: Client) -> RunReport:
        handle = client.get_workflow_handle(workflow_id, result_type=RunReport)
        try:
            described = await handle.describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise _no_such_run(workflow_id) from None
            raise
        if described.status == WorkflowExecutionStatus.COMPLETED:
            report: RunReport = await handle.result()
            return report
        return await handle.query(RunbookWorkflow.report)

    report = _run(_with_client(go))
    lines = [f"{report.workflow_id}: {report.status.value} - {report.summary}"]
    lines += [f"  {s.at:%H:%M:%S} {s.kind:<22} {s.actor:<14} {s.summary}" for s in report.steps]
    _emit(report.model_dump(mode="json"), as_json, "\n".join(lines))


def _switch_status(workflow_id: str, as_json: bool) -> None:
    async def go(client: Client) -> SafetyStatus:
        status: SafetyStatus = await client.get_workflow_handle(workflow_id).query(
            "status", SafetyQuery(target="", runbook=""), result_type=SafetyStatus
        )
        return status

    state = _run(_with_client(go))
    head = (
        f"{workflow_id}: PAUSED by {state.paused_by}: {state.pause_reason}"
        if state.paused
        else f"{workflow_id}: running (not paused)"
    )
    lines = [f"  {r.at:%H:%M:%S} {r.kind:<9} {r.by:<14} {r.reason}" for r in state.audit]
    _emit(state.model_dump(mode="json"), as_json, "\n".join([head, *lines]))


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


@app.command()
def pause(
    reason: Annotated[str, typer.Option(help="why; shown to every waiting run")],
    token_file: TokenFile = None,
) -> None:
    """Kill switch: no run acts until `remediate resume`; alerts are still taken."""
    status = _run(ApprovalApi(_api_url(), _token(token_file)).switch("pause", reason))
    typer.echo(f"paused by {status.paused_by}: no remediation will act until `remediate resume`")


@app.command()
def resume(
    reason: Annotated[str, typer.Option(help="why it is safe again")] = "",
    token_file: TokenFile = None,
) -> None:
    """Release the kill switch (the `[safety] resume_group`, engineering leads by default)."""
    status = _run(ApprovalApi(_api_url(), _token(token_file)).switch("resume", reason))
    who = status.audit[-1].by if status.audit else "you"
    typer.echo(f"resumed by {who}")


# The incident record and the team's numbers (their logic: workers/report_commands.py).
app.command(name="report")(report_commands.report)
app.command(name="stats")(report_commands.stats)


def _main() -> int:
    try:
        app()
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except Exception as err:
        message = _user_error(err)
        if message is None:
            traceback.print_exc()
            return 1
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        return 2
    return 0


def main() -> None:
    code = _main()
    # Skip interpreter teardown: the Temporal client's Rust threads can abort the process
    # while Python finalizes ("PyGILState_Release ... finalizing", temporalio/sdk-python#300),
    # turning a successful command into exit -6. Everything the command does is done here.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
