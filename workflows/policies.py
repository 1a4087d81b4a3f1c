"""How long and how often the runbooks' activities may run: one place for every runbook.

Reads (diagnosis, plans, state checks) retry a few times, quickly, and then the run escalates:
a diagnosis that cannot be made is a reason to ask a person. Writes are idempotent and retry
longer with backoff, because a write abandoned half-way leaves its target in between; a
non-retryable error (bad config, drift from the plan) still stops them at once.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

READ_RETRY = RetryPolicy(maximum_attempts=5, initial_interval=timedelta(seconds=1))
ACT_RETRY = RetryPolicy(maximum_attempts=10, maximum_interval=timedelta(seconds=30))
NOTIFY_RETRY = RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(seconds=10))
# A notification or a sender's API call (Slack, PagerDuty, Alertmanager): a few requests.
NOTIFY_TIMEOUT = timedelta(seconds=30)

# A plan made stale by the world (it moved between plan and act) is re-made this many times
# at most before the run escalates; each new plan needs a new decision.
MAX_REPLANS = 3

# Most steps are one or two API or SQL calls.
STEP_TIMEOUT = timedelta(minutes=2)
READ_TIMEOUT = timedelta(seconds=60)
# Downloads, dumps and restores, which heartbeat while they run.
LONG_TIMEOUT = timedelta(hours=6)


def batch_heartbeat_timeout(batch_pause_seconds: float) -> timedelta:
    """For an activity that works in batches with a configured pause between them: one
    batch's work (terminate_sessions waits up to 5 s for the backends to exit) plus the pause,
    never below 10 s. The pause also heartbeats in slices; covering it whole as well means a
    slice that runs late (a busy worker) is not taken for a dead worker."""
    return timedelta(seconds=max(10.0, batch_pause_seconds + 10.0))
