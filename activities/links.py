"""Links to the service's pages, for notifications (Slack, PagerDuty notes, generic webhooks)
and reports: one place that knows the page paths, so a path changes in one place.

The pages are served by the service (`workers/`); their base URL is `[pages] public_url`.
Without it there are no links (None), and notifications say how to decide from the CLI.
"""

from __future__ import annotations

from urllib.parse import quote

from activities.config import EngineConfig

GATE_PATH = "/ui/gates/{workflow_id}"
RUN_PATH = "/ui/runs/{workflow_id}"


def gate_page_url(config: EngineConfig, workflow_id: str) -> str | None:
    """The page where a lead reads the open gate's plan and approves or rejects it."""
    return _url(config, GATE_PATH, workflow_id)


def run_page_url(config: EngineConfig, workflow_id: str) -> str | None:
    """The page of a run: its timeline and, once it ended, its incident record."""
    return _url(config, RUN_PATH, workflow_id)


def _url(config: EngineConfig, path: str, workflow_id: str) -> str | None:
    base = config.pages.public_url
    if base is None:
        return None
    return base + path.format(workflow_id=quote(workflow_id, safe=""))
