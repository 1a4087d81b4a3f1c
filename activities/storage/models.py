"""What a backup in the bucket is: the object, and the manifest the backup tool wrote beside it."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


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
