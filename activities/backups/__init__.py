"""Backups of database targets: S3 listing and transfer, pg_dump/pg_restore, and the
activities of the backup_restore runbook."""
