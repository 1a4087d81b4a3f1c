"""Match an incoming alert to a configured route: runbook, target, parameters."""

from __future__ import annotations

import re
from functools import lru_cache

from activities.config import EngineConfig, RouteConfig
from workflows.models import AlertContext


@lru_cache(maxsize=256)
def _pattern(expression: str) -> re.Pattern[str]:
    return re.compile(expression)


def matches(route: RouteConfig, alert: AlertContext) -> bool:
    if route.source is not None and route.source != alert.source:
        return False
    labels = alert.labels
    if any(labels.get(key) != value for key, value in route.match.items()):
        return False
    return all(
        key in labels and _pattern(expression).fullmatch(labels[key]) is not None
        for key, expression in route.match_re.items()
    )


def route_for(config: EngineConfig, alert: AlertContext) -> RouteConfig | None:
    """The first route that matches, in config order."""
    return next((route for route in config.routes if matches(route, alert)), None)
