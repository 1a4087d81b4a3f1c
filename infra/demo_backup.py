"""Take a backup of the demo's orders database into the local S3 (moto) the way a nightly
job would: `pg_dump -Fc` streamed to s3://demo-backups/orders/ with a manifest (checksum,
time, row counts). It is the engine's own snapshot activity, run once from here.

    .venv/bin/python -m infra.demo_backup            # with `make run` going
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime

from temporalio.testing import ActivityEnvironment

from activities.postgres.backups import snapshot_database
from activities.postgres.models import SnapshotInput
from infra.demo_config import worker_environment


def main() -> None:
    os.environ.update(worker_environment())
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
