"""MongoDB: connection counts from `serverStatus` (pool exhaustion diagnosis)."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.config import load_config
from activities.mongo.models import MongoConnectionUsage, MongoTargetInput
from activities.secrets.references import resolve_secret


@activity.defn
async def get_mongo_connection_usage(params: MongoTargetInput) -> MongoConnectionUsage:
    config = load_config().target(params.target)
    if config.kind != "mongodb" or config.dsn is None:
        raise ApplicationError(
            f"target {params.target!r} is a {config.kind} target, not mongodb", non_retryable=True
        )
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        resolve_secret(config.dsn), serverSelectionTimeoutMS=10_000, appname="remediation-engine"
    )
    try:
        status = await client.admin.command("serverStatus")
    except PyMongoError as err:
        raise ApplicationError(
            f"serverStatus failed on target {params.target!r}: {type(err).__name__}"
        ) from None
    finally:
        await client.close()
    connections = status["connections"]
    current = int(connections["current"])
    available = int(connections["available"])
    return MongoConnectionUsage(
        target=params.target,
        current=current,
        available=available,
        active=int(connections.get("active", 0)),
        total_created=int(connections.get("totalCreated", 0)),
        usage=round(current / max(1, current + available), 4),
    )
