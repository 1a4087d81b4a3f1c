"""What the backup_restore runbook passes between its activities: names, sizes, checksums and
counts. No credential and no data ever crosses the workflow boundary."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class Manifest(BaseModel):
    """`<backup key>.json` beside a backup: what the backup tool knew when it took it."""

    sha256: str
    taken_at: datetime
    size: int | None = None
    database: str | None = None
    # Rows per table (`schema.table`), counted in the same snapshot as the dump.
    row_counts: dict[str, int] | None = None


class BackupInfo(BaseModel):
    bucket: str
    key: str
    size: int
    taken_at: datetime
    sha256: str | None = None
    row_counts: dict[str, int] | None = None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def describe(self) -> str:
        return f"{self.url} ({self.size / 1e6:.1f} MB, taken {self.taken_at:%Y-%m-%d %H:%M:%S} UTC)"


class FindBackupsInput(BaseModel):
    target: str
    # The newest backup taken strictly before this time (the corruption time)...
    before: datetime | None = None
    # ...or exactly this one (a key, or a key's last path segment).
    name: str | None = None


class BackupChoice(BaseModel):
    chosen: BackupInfo | None = None
    examined: int = 0
    newest: BackupInfo | None = None
    why_none: str = ""


class CheckBackupInput(BaseModel):
    target: str
    backup: BackupInfo


class BackupCheck(BaseModel):
    sha256: str
    size: int
    toc_entries: int
    tables: list[str] = Field(default_factory=list)


class SnapshotInput(BaseModel):
    target: str
    # Where to put it: "snapshot" (the target's snapshot_prefix) or "backup" (its prefix).
    purpose: str = "snapshot"
    label: str


class Snapshot(BaseModel):
    bucket: str
    key: str
    sha256: str
    size: int
    taken_at: datetime
    database: str
    row_counts: dict[str, int]

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class DatabaseNames(BaseModel):
    """The three databases of one restore: the live name, the scratch database the backup is
    restored into, and the name the replaced database keeps until the run is verified."""

    live: str
    scratch: str
    previous: str
    failed: str


class RestoreInput(BaseModel):
    target: str
    backup: BackupInfo
    names: DatabaseNames
    run: str


class RestoreResult(BaseModel):
    scratch: str
    tables_restored: int
    # Tables a resumed attempt found already restored and did not load again.
    resumed_tables: list[str] = Field(default_factory=list)
    already_restored: bool = False
    seconds: float = 0.0


class ValidateInput(BaseModel):
    target: str
    database: str
    expected_counts: dict[str, int] | None = None


class Validation(BaseModel):
    passed: bool
    row_counts: dict[str, int]
    total_rows: int
    problems: list[str] = Field(default_factory=list)
    sanity: dict[str, float] = Field(default_factory=dict)


class SwitchInput(BaseModel):
    target: str
    names: DatabaseNames
    run: str


class SwitchResult(BaseModel):
    already: bool
    detail: str
    sessions_ended: int = 0


class DropInput(BaseModel):
    target: str
    database: str
    run: str
    # Which of the run's databases this must be: "previous" (replaced), or "scratch" (a
    # restore cancelled before its switch).
    role: str = "previous"
