"""Backups in S3: listing with manifests, checksummed downloads, streamed uploads.

boto3 honours AWS_ENDPOINT_URL, so the same code talks to AWS or the local emulator (moto).
"""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from activities.storage.models import BackupInfo, Manifest

CHUNK = 8 * 1024 * 1024
MANIFEST_SUFFIX = ".json"


@lru_cache(maxsize=8)
def s3_client(region: str | None) -> Any:
    return boto3.client("s3", region_name=region) if region else boto3.client("s3")


def describe_error(err: Exception) -> str:
    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".strip(": ")
    return type(err).__name__


def list_backups(client: Any, bucket: str, prefix: str) -> list[BackupInfo]:
    """Every `.dump` object under `prefix` (all pages), with its manifest when there is one;
    newest first by the time the backup was taken."""
    objects: dict[str, dict[str, Any]] = {}
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            objects[obj["Key"]] = obj
    backups = []
    for key, obj in objects.items():
        if not key.endswith(".dump"):
            continue
        manifest = None
        if key + MANIFEST_SUFFIX in objects:
            body = client.get_object(Bucket=bucket, Key=key + MANIFEST_SUFFIX)["Body"].read()
            manifest = Manifest.model_validate_json(body)
        sha256 = manifest.sha256 if manifest else None
        if sha256 is None:
            head = client.head_object(Bucket=bucket, Key=key)
            sha256 = head.get("Metadata", {}).get("sha256")
        modified: datetime = obj["LastModified"]
        backups.append(
            BackupInfo(
                key=key,
                bucket=bucket,
                size=int(obj["Size"]),
                taken_at=manifest.taken_at if manifest else modified.astimezone(UTC),
                sha256=sha256,
                row_counts=manifest.row_counts if manifest else None,
            )
        )
    return sorted(backups, key=lambda b: b.taken_at, reverse=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download(client: Any, backup: BackupInfo, into: Path) -> tuple[Path, str]:
    """The backup as a local file named for its checksum, and the file's SHA-256; an earlier
    complete download with the right checksum is reused (a retried or resumed run does not
    fetch it again). One streamed GET, hashed as it is written: it needs no second pass over
    the file, and an S3 emulator serves it several times faster than ranged parallel GETs."""
    into.mkdir(parents=True, exist_ok=True)
    name = backup.sha256 or hashlib.sha256(backup.key.encode()).hexdigest()
    path = into / f"{name}.dump"
    complete = path.exists() and path.stat().st_size == backup.size
    if complete and backup.sha256 and sha256_of(path) == backup.sha256:
        return path, backup.sha256
    partial = path.with_suffix(".part")
    digest = hashlib.sha256()
    body = client.get_object(Bucket=backup.bucket, Key=backup.key)["Body"]
    try:
        with partial.open("wb") as f:
            for chunk in body.iter_chunks(CHUNK):
                digest.update(chunk)
                f.write(chunk)
    finally:
        body.close()
    partial.replace(path)
    return path, digest.hexdigest()


class HashingReader:
    """A readable stream that hashes and counts what passes through it (for uploads of a
    pipe, whose size and checksum are known only at the end)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.digest = hashlib.sha256()
        self.size = 0
        self.lock = threading.Lock()

    def read(self, size: int = -1) -> bytes:
        with self.lock:
            data = self.stream.read(size)
            self.digest.update(data)
            self.size += len(data)
            return data


def upload_stream(client: Any, stream: IO[bytes], bucket: str, key: str) -> tuple[str, int]:
    reader = HashingReader(stream)
    client.upload_fileobj(reader, bucket, key)
    return reader.digest.hexdigest(), reader.size


def put_manifest(client: Any, bucket: str, key: str, manifest: Manifest) -> None:
    client.put_object(
        Bucket=bucket,
        Key=key + MANIFEST_SUFFIX,
        Body=json.dumps(manifest.model_dump(mode="json"), sort_keys=True).encode(),
        ContentType="application/json",
    )


__all__ = [
    "BotoCoreError",
    "ClientError",
    "describe_error",
    "download",
    "list_backups",
    "put_manifest",
    "s3_client",
    "sha256_of",
    "upload_stream",
]
