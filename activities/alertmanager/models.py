"""The input and result of the silence activities (labels and ids, no credential)."""

from __future__ import annotations

from pydantic import BaseModel


class CreateSilenceInput(BaseModel):
    workflow_id: str
    run_id: str
    runbook: str
    # The alert's labels: its identity in Alertmanager; each becomes an equality matcher.
    labels: dict[str, str]


class SilenceResult(BaseModel):
    # False: no [silences] section; nothing was done.
    configured: bool = True
    silence_id: str | None = None
    # An earlier attempt (or an earlier call of the run) had created it.
    already_existed: bool = False


class ExpireSilenceInput(BaseModel):
    silence_id: str


class ExpireSilenceResult(BaseModel):
    configured: bool = True
    expired: bool = False
    # Expired already (by a person, by its end time) or deleted: left as it was.
    already_over: bool = False
