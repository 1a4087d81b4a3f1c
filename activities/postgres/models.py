"""What the Postgres activities take and return: sessions by pid and start time, counts,
database names, backups and checksums. Never a DSN, a password or a row of data."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from activities.storage.models import BackupInfo


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


class PlannedSnapshot(BaseModel):
    """The safety snapshot as a plan names it: where it goes, and what it will hold (the live
    database's identity and row counts once writes are off). A restore that ships the
    snapshot after its switch plans it with this; `Snapshot` is one taken."""

    bucket: str
    key: str
    taken_at: datetime
    database: str
    row_counts: dict[str, int]
    # The snapshotted database's identity (its oid): a database dropped and created again
    # under the same name since is another database.
    database_oid: int | None = None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class Snapshot(PlannedSnapshot):
    sha256: str
    size: int


class PlanSnapshotInput(BaseModel):
    target: str
    label: str


class DatabaseNames(BaseModel):
    """The three databases of one restore: the live name, the scratch database the backup is
    restored into, and the name the replaced database keeps until the run is verified."""

    live: str
    scratch: str
    previous: str
    failed: str


class SnapshotReplacedInput(BaseModel):
    """Dump the database a restore replaced (renamed aside at the switch) to the planned
    place: only this run's replaced database, and only the one the plan was made for."""

    target: str
    names: DatabaseNames
    run: str
    planned: PlannedSnapshot


class VerifySnapshotInput(BaseModel):
    target: str
    snapshot: Snapshot


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
    # The switch's preconditions (unset: not checked): the live database is still the one
    # snapshotted (its oid), and still read-only (no write since the snapshot).
    live_oid: int | None = None
    live_read_only: bool = False


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
    # The replaced database's safety snapshot, when it was shipped after the switch: the
    # drop refuses unless this object is in S3 with this checksum and size.
    snapshot: Snapshot | None = None


# pool_restart: connection usage and stale sessions


class TargetInput(BaseModel):
    target: str


class ConnectionUsage(BaseModel):
    target: str
    database: str
    max_connections: int
    # Client connections of the whole cluster (what exhausts max_connections)...
    total: int
    # ...and of the target's own database (what a plan's share of sessions is measured
    # against: on a shared cluster the other databases' connections are not its to end).
    database_total: int | None = None
    usage: float
    by_state: dict[str, int]
    by_user: dict[str, int]
    by_application: dict[str, int]


class FindIdleSessionsInput(BaseModel):
    target: str
    idle_older_than_seconds: int


class SessionRef(BaseModel):
    """A backend is identified by pid *and* start time: a pid alone can be reused."""

    pid: int
    backend_start: datetime
    user: str
    application: str
    state: str
    idle_seconds: float


class IdleSessions(BaseModel):
    sessions: list[SessionRef]


class TerminateSessionsInput(BaseModel):
    target: str
    sessions: list[SessionRef]
    idle_older_than_seconds: int
    batch_size: int = 50
    batch_pause_seconds: float = 0.0


class TerminateSessionsResult(BaseModel):
    terminated: list[int] = Field(default_factory=list)
    # The part of `terminated` ended by an attempt that died before reporting it: the attempt
    # had recorded the batch before ending it, and the retry found those sessions gone. (One
    # that left on its own in the same moment cannot be told apart; the batch was the
    # engine's to end, so it is counted as the engine's.)
    terminated_unreported: list[int] = Field(default_factory=list)
    # Gone before any attempt had started on them.
    already_gone: list[int] = Field(default_factory=list)
    skipped_no_longer_idle: list[int] = Field(default_factory=list)


class TerminationProgress(BaseModel):
    """What terminate_sessions records on the server before each batch: the result so far,
    and the sessions it is about to terminate (none between batches)."""

    done: TerminateSessionsResult = Field(default_factory=TerminateSessionsResult)
    in_flight: list[int] = Field(default_factory=list)


# key_rotation: a login's sessions


class SessionInfo(BaseModel):
    pid: int
    client_addr: str
    application_name: str
    backend_start: datetime

    def describe(self) -> str:
        app = f" {self.application_name}" if self.application_name else ""
        return f"pid {self.pid} from {self.client_addr}{app} since {self.backend_start:%H:%M:%S}"
