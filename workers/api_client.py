"""The CLI's way to the approval service over HTTP (REMEDIATE_API_URL): the same path as any
other approver, so the CLI needs only the caller's token and can sign nothing itself."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import httpx
from pydantic import TypeAdapter

from activities.safety_models import SafetyStatus
from workers.api_shapes import NEXT_PAGE_HEADER, DecisionError, RunEndedError, StartResult
from workflows.models import ApprovalDecision, GateView

if TYPE_CHECKING:
    from activities.decision_tokens import DecisionKind

_GATES = TypeAdapter(list[GateView])
# Gates per GET /approvals: Temporal's largest visibility page, so one call lists 1,000.
PAGE_SIZE = 1000
_GATE = TypeAdapter(GateView | None)


class ApprovalApi:
    def __init__(self, base_url: str, token: str) -> None:
        self.base_url, self.token = base_url.rstrip("/"), token

    async def _call(
        self,
        method: str,
        path: str,
        body: object = None,
        params: dict[str, str | int] | None = None,
    ) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as http:
            try:
                response = await http.request(
                    method,
                    path,
                    json=body,
                    params=params,
                    headers={"Authorization": f"Bearer {self.token}"},
                )
            except httpx.HTTPError as err:
                message = (
                    f"cannot reach the approval service at {self.base_url} "
                    f"({type(err).__name__}): is remediate-service running there? "
                    "(REMEDIATE_API_URL)"
                )
                raise DecisionError(message, 503) from None
        if response.status_code >= 400:
            try:
                message = str(response.json().get("error", response.text))
            except ValueError:
                message = response.text
            raise DecisionError(message, response.status_code)
        return response

    async def pending(self) -> list[GateView]:
        """Every open gate, a page at a time (a service from before paging answers all of
        them at once, without a next page)."""
        gates: list[GateView] = []
        params: dict[str, str | int] = {"page_size": PAGE_SIZE}
        while True:
            response = await self._call("GET", "/approvals", params=params)
            gates += _GATES.validate_json(response.content)
            token = response.headers.get(NEXT_PAGE_HEADER)
            if not token:
                return gates
            params = {"page_size": PAGE_SIZE, "next_page_token": token}

    async def open_gate(self, workflow_id: str) -> GateView | None:
        """The gate open on `workflow_id`, or None between gates; DecisionError 404 if there
        is no such run, RunEndedError if it has finished."""
        try:
            response = await self._call("GET", f"/approvals/{workflow_id}")
        except DecisionError as err:
            if err.status == 409:
                raise RunEndedError.from_message(str(err)) from None
            raise
        return _GATE.validate_json(response.content)

    async def decide(
        self, workflow_id: str, kind: DecisionKind, reason: str, plan_id: str | None = None
    ) -> ApprovalDecision:
        """Decide `plan_id` (the plan the caller saw), or else the plan open now."""
        if plan_id is None:
            gate = await self.open_gate(workflow_id)
            if gate is None:
                raise DecisionError(f"{workflow_id} has no gate awaiting a decision", 409)
            plan_id = gate.plan.plan_id
        response = await self._call(
            "POST", f"/approvals/{workflow_id}/{kind}", {"plan_id": plan_id, "reason": reason}
        )
        return ApprovalDecision.model_validate_json(response.content)

    async def end_hold(self, workflow_id: str, reason: str) -> str:
        response = await self._call("POST", f"/runs/{workflow_id}/end-hold", {"reason": reason})
        return str(response.json()["result"])

    async def start(
        self,
        runbook: str,
        target: str,
        parameters: dict[str, str],
        *,
        dry_run: bool,
        reason: str,
    ) -> StartResult:
        body = {
            "runbook": runbook,
            "target": target,
            "parameters": parameters,
            "dry_run": dry_run,
            "reason": reason,
        }
        return StartResult.model_validate_json((await self._call("POST", "/runs", body)).content)

    async def switch(self, kind: Literal["pause", "resume"], reason: str) -> SafetyStatus:
        response = await self._call("POST", f"/safety/{kind}", {"reason": reason})
        return SafetyStatus.model_validate_json(response.content)
