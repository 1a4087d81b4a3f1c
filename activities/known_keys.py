"""The approval verify keys this worker process has read from its config, by key id.

A gate or the safety envelope reads its keys when it starts; a decision signed with a key
added since (a rotation) names a `kid` it does not know. Its Update validator cannot read
the config (no I/O there), so it asks this registry instead: a `kid` this worker has read
may be a new genuine key, and the handler reads the keys again through an activity; any
other `kid` is refused in the validator and never reaches the run's history.

Validators are not run when a history is replayed, so reading process state here does not
touch determinism; the handler decides only with the keys its activity returned.
"""

from __future__ import annotations

from collections.abc import Iterable

from activities import decision_tokens

_known: set[str] = set()


def remember(keys: Iterable[str]) -> None:
    """Record the key ids of `keys` (public keys, as verify_keys resolves them)."""
    _known.update(decision_tokens.key_id(decision_tokens.public_key(k)) for k in keys)


def known(kid: str) -> bool:
    return kid in _known
