"""What the MongoDB activities take and return."""

from __future__ import annotations

from pydantic import BaseModel


class MongoTargetInput(BaseModel):
    target: str


class MongoConnectionUsage(BaseModel):
    target: str
    current: int
    available: int
    active: int
    total_created: int
    usage: float
