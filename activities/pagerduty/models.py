"""The input and result of the PagerDuty activities (incident ids and text, no token)."""

from __future__ import annotations

from pydantic import BaseModel


class ResolveIncidentInput(BaseModel):
    incident_id: str
    workflow_id: str
    # Why: the run's summary, added as a note before the incident is resolved.
    summary: str


class ResolveIncidentResult(BaseModel):
    # False: no [pagerduty] section (or resolve_when_verified = false); nothing was done.
    configured: bool = True
    resolved: bool = False
    # It was resolved already (by a person, or an earlier attempt): left as it was.
    already_resolved: bool = False
