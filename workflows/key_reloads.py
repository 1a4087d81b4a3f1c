"""When a gate or the safety envelope reads the approval verify keys again.

A gate reads the keys when its run starts, and the safety envelope when it first needs them;
runs wait at gates for minutes or hours meanwhile, and the keys may rotate (README, "Rotating
the approval signing keys"). So, before it accepts a decision, a handler reads them again
(an activity) unless it did within RELOAD_EVERY, and verifies the decision with what it
read: a key added since is accepted, a key removed since is refused, within a minute.

The Update validator cannot read anything: it verifies with the keys last read. A decision
naming a key it does not know is let through to the handler only when this worker's own
config lists that key (activities/known_keys.py) and no such decision had the keys read
within RELOAD_EVERY; any other is refused there and never reaches the run's history. So a sender
who forges a `kid` gets a refusal that leaves no trace, and one whose key was listed once
costs the run at most one recorded refusal and one read a minute.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

from temporalio import workflow

# Workflows from before this accepted decisions with the keys they read first, and refused
# a decision naming any other key in the validator.
KEY_RELOAD_PATCH = "verify-key-reload-v1"
RELOAD_EVERY = timedelta(seconds=60)

T = TypeVar("T")


class KeyReloads:
    def __init__(self) -> None:
        self.read_at: datetime | None = None  # when the keys in use were read
        # When a decision naming a key unknown here last had them read: at most one a minute.
        self.unknown_at: datetime | None = None
        self.running = False

    def read(self) -> None:
        """The keys in use were read just now."""
        self.read_at = workflow.now()

    def due(self) -> bool:
        """Whether the keys in use are old enough to be read again before a decision."""
        return self.read_at is None or workflow.now() - self.read_at >= RELOAD_EVERY

    def unknown_allowed(self) -> bool:
        """Whether a decision naming an unknown key may have the keys read (validator-safe)."""
        return self.unknown_at is None or workflow.now() - self.unknown_at >= RELOAD_EVERY

    async def reload(self, load: Callable[[], Awaitable[T]], *, unknown: bool) -> T | None:
        """`load()`'s result, or None when the keys need not or may not be read now; a read
        already under way is waited for (None then too: the caller uses what it brought)."""
        if self.running:
            await workflow.wait_condition(lambda: not self.running)
            return None
        if not (self.unknown_allowed() if unknown else self.due()):
            return None
        if unknown:
            self.unknown_at = workflow.now()
        self.running = True
        try:
            result = await load()
        finally:
            self.running = False
        self.read()
        return result
