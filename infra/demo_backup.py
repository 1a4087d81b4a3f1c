"""Take a backup of the demo's orders database into the local S3 (moto) the way a nightly
job would: `pg_dump -Fc` streamed to s3://demo-backups/orders/ with a manifest (checksum,
time, row counts), after writing three orders through the demo app. It is the engine's own
snapshot activity, run once from here.

    .venv/bin/python -m infra.demo_backup            # with `make run` going
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime

import httpx
from temporalio.testing import ActivityEnvironment

from activities.postgres.backups import snapshot_database
from activities.postgres.models import SnapshotInput
from infra.demo_config import APP_URL, worker_environment


def _seed_orders(count: int = 3) -> None:
    """A shop has orders before its nightly backup: on a fresh stack (no orders table yet),
    write a few through the demo app, so the backup has something to restore."""
    for _ in range(count):
        httpx.post(f"{APP_URL}/orders", json={}, timeout=10).raise_for_status()


def main() -> None:
    os.environ.update(worker_environment())
    _seed_orders()
    label = f"nightly-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    backup = asyncio.run(
        ActivityEnvironment().run(
            snapshot_database, SnapshotInput(target="orders-db", purpose="backup", label=label)
        )
    )
    rows = sum(backup.row_counts.values())
    print(f"backup {backup.url}: {backup.size} bytes, {rows} rows, sha256 {backup.sha256[:16]}…")


if __name__ == "__main__":
    main()
