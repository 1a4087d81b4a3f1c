"""What both read-only modes (Postgres setting, application flag) take and report."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ReadOnlyInput(BaseModel):
    target: str
    enabled: bool


class ReadOnlyResult(BaseModel):
    # The database name (Postgres mode) or the flag's URL (application-flag mode).
    scope: str
    was_read_only: bool
    read_only: bool
    # What was (or would be) executed, exactly as the plan shows it.
    statements: list[str] = Field(default_factory=list)
    sessions_ended: list[int] = Field(default_factory=list)
    # Planning only: client sessions a change would end (Postgres mode).
    client_sessions: int = 0


class WriteCheck(BaseModel):
    reads_ok: bool
    writes_refused: bool
    detail: str = ""
