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

# Every activity is given HEARTBEAT_TIMEOUT, and the worker heartbeats every activity that
# has one for as long as it runs (workers/activity_keepalive.py; terminate_sessions records
# its own). So a worker that dies (SIGKILL, out of memory, a lost node) is noticed this long
# after its last heartbeat, and the step is retried on another worker after the retry
# policy's first interval (1 s): within about 12 s of the death, whatever the step's
# start-to-close timeout. The worker heartbeats every 2 s (heartbeats.interval) and the SDK
# sends them at most every second (workers/worker.py), so a busy worker may miss four in a
# row before a live attempt is taken for dead.
HEARTBEAT_TIMEOUT = timedelta(seconds=10)

# Start-to-close timeouts no longer decide how fast a dead worker is noticed (the heartbeat
# timeout does); they bound a step that hangs on a live worker. Most steps are one or two API
# or SQL calls.
STEP_TIMEOUT = timedelta(minutes=2)
READ_TIMEOUT = timedelta(seconds=60)
# Downloads, dumps and restores, which heartbeat while they run.
LONG_TIMEOUT = timedelta(hours=6)


def batch_heartbeat_timeout(batch_pause_seconds: float) -> timedelta:
    """For terminate_sessions, which keeps itself alive (`heartbeats.record`, between batches,
    so the worker's keep-alive leaves it alone): one batch's work (it waits up to 5 s for the
    backends to exit) plus the pause, 10 s with no pause. The pause also heartbeats in slices;
    covering it whole as well means a slice that runs late (a busy worker) is not taken for a
    dead worker."""
    return timedelta(seconds=max(HEARTBEAT_TIMEOUT.total_seconds(), batch_pause_seconds + 10.0))
