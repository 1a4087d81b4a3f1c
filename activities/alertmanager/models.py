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
    # How long it lasts unless the run extends it (`[silences] ends_after`): the run extends
    # it every third of that while it holds it.
    ends_after_seconds: float = 0.0


class ExtendSilenceInput(BaseModel):
    silence_id: str


class ExtendSilenceResult(BaseModel):
    configured: bool = True
    # The silence's id now (Alertmanager keeps it when it can update in place); None when it
    # is over: a person expired it, or it lapsed. The run does not make it again.
    silence_id: str | None = None


class ExpireSilenceInput(BaseModel):
    silence_id: str


class ExpireSilenceResult(BaseModel):
    configured: bool = True
    expired: bool = False
    # Expired already (by a person, by its end time) or deleted: left as it was.
    already_over: bool = False
