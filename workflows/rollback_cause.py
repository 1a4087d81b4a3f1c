"""Did the release serving production cause the outage? Runbook 000 rolls back only "if recent
deploy caused issue": an outage that began long after the current release went out (an
exhausted database pool making `/health` fail) is not fixed by bringing back an older one,
and a release created after the outage began did not cause it (it may be a fix that did not
work). Both go to a person instead (issue 13, scenario 2).

Pure functions of the run's input and diagnosis: deterministic, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.deploy.models import Deployment
    from workflows.models import AlertContext

# Runs that planned before the rollback asked whether the outage follows a deploy replay
# without the question.
RECENCY_PATCH = "rollback-deploy-recency-v1"
# The alert's clock (Prometheus, PagerDuty) and the deploy platform's are not the same clock:
# a release created this little after the outage's start still counts as before it.
CLOCK_SKEW = timedelta(seconds=60)


@dataclass(frozen=True)
class OutageStart:
    at: datetime
    source: str


@dataclass(frozen=True)
class DeployCause:
    follows_deploy: bool
    summary: str
    # How long before the outage's start the current release was created (negative: after).
    lead_seconds: float
    window_seconds: float
    start: OutageStart

    def details(self) -> dict[str, Any]:
        return {
            "follows_deploy": self.follows_deploy,
            "outage_started_at": self.start.at.isoformat(),
            "outage_start_from": self.start.source,
            "deploy_lead_seconds": round(self.lead_seconds),
            "deploy_window_seconds": self.window_seconds,
        }


def outage_start(alert: AlertContext | None, detected: datetime) -> OutageStart:
    """The alert's own start when the run was started by one that says (never later than
    this run's detection), else the moment this run found the target down."""
    if alert is not None and alert.starts_at is not None:
        name = alert.name or alert.fingerprint
        at = min(alert.starts_at.astimezone(UTC), detected)
        return OutageStart(at, f"{alert.source} alert {name}")
    return OutageStart(detected, "this run's detection")


def judge(current: Deployment, start: OutageStart, window: timedelta) -> DeployCause:
    created = current.created_at
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    lead = start.at - created
    started = f"outage start: {start.at:%Y-%m-%d %H:%M:%S} UTC, from {start.source}"

    def cause(follows: bool, summary: str) -> DeployCause:
        return DeployCause(
            follows, f"{summary} ({started})", lead.total_seconds(), window.total_seconds(), start
        )

    if lead < -CLOCK_SKEW:
        return cause(
            False,
            f"current {current.id} was created {_span(-lead)} after the outage started, so it "
            "did not cause it (it may be a fix that did not work); not rolling back",
        )
    if lead > window:
        return cause(
            False,
            f"outage does not follow a deploy (current {current.id} created {_span(lead)} "
            f"before the outage started; the window is {_span(window)}); not rolling back",
        )
    return cause(
        True,
        f"outage follows a deploy: current {current.id} was created "
        + (f"{_span(lead)} before" if lead >= timedelta(0) else "as")
        + f" the outage started, within the {_span(window)} window",
    )


def _span(delta: timedelta) -> str:
    minutes = delta.total_seconds() / 60
    return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"
