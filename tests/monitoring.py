"""What the monitoring tests share: where infra/monitoring/ is, the Debian binaries that check
and run it, the metric names each exporter is known to export, and the metric names a PromQL
expression reads."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from workers import metrics as service_metrics
from workflows import run_metrics
from workflows.approval_gate import REFUSALS_METRIC

MONITORING = Path(__file__).resolve().parents[1] / "infra/monitoring"
RULES = sorted((MONITORING / "rules").glob("*.rules.yml"))
RULES_TEST = MONITORING / "rules.test.yml"
DASHBOARD = MONITORING / "grafana/remediation-engine.json"
EXAMPLE_CONFIG = MONITORING.parent / "config/example.toml"

# The Debian packages' binaries (`make test` installs them: the Makefile's DEB_PACKAGES).
BINARIES = {
    "promtool": "/usr/bin/promtool",
    "prometheus": "/usr/bin/prometheus",
    "amtool": "/usr/bin/amtool",
    "alertmanager": "/usr/bin/prometheus-alertmanager",
    "postgres_exporter": "/usr/bin/prometheus-postgres-exporter",
    "blackbox_exporter": "/usr/bin/prometheus-blackbox-exporter",
}


def binary(name: str) -> str:
    """The binary's path, or the test is skipped saying which package to install."""
    path = BINARIES[name]
    if not Path(path).exists():
        found = shutil.which(Path(path).name)
        if found is None:
            pytest.skip(f"{path} missing: `make debian-packages` installs it")
        return found
    return path


def histogram(name: str) -> set[str]:
    return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}


def service_metric_names() -> set[str]:
    """What the service's GET /metrics exports, as Prometheus names them (a counter `x` is
    `x_total`), from the metric objects themselves: a rename there is a rename here."""
    names: set[str] = set()
    for value in vars(service_metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        for family in value.describe():
            if family.type == "counter":
                names.add(f"{family.name}_total")
            elif family.type == "histogram":
                names |= histogram(family.name)
            else:
                names.add(family.name)
    return names


# The runbooks' metrics on the worker's SDK endpoint (workflows/run_metrics.py), from their
# constants: a rename there is a rename here.
WORKER_METRICS = {
    REFUSALS_METRIC,
    run_metrics.RUNS_STARTED,
    run_metrics.RUNS_FINISHED,
    run_metrics.GATES_OPENED,
    *histogram(run_metrics.TIME_TO_APPROVE),
    *histogram(run_metrics.TIME_TO_REMEDIATE),
}
# The Temporal SDK's worker metrics the dashboard reads (names as its Prometheus exporter
# writes them: counters without `_total`, durations in milliseconds). The integration test
# checks the first group on a real worker's endpoint after a run; the second appears only
# once something failed.
SDK_METRICS_AFTER_A_RUN = {
    "temporal_worker_task_slots_available",
    *histogram("temporal_workflow_task_schedule_to_start_latency"),
    *histogram("temporal_activity_execution_latency"),
}
SDK_METRICS_ON_FAILURE = {"temporal_activity_execution_failed", "temporal_request_failure"}
# The exporters'; the integration test checks postgres-exporter's on the real binary.
POSTGRES_EXPORTER_METRICS = {"pg_stat_activity_count", "pg_settings_max_connections"}
BLACKBOX_EXPORTER_METRICS = {"probe_success"}
PROMETHEUS_METRICS = {"up"}

# What the alert rules may read: metrics that exist today.
RULE_METRICS = (
    service_metric_names()
    | POSTGRES_EXPORTER_METRICS
    | BLACKBOX_EXPORTER_METRICS
    | PROMETHEUS_METRICS
)
# What the dashboard may read: those, and the worker's.
DASHBOARD_METRICS = RULE_METRICS | WORKER_METRICS | SDK_METRICS_AFTER_A_RUN | SDK_METRICS_ON_FAILURE

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_LABEL_LISTS = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_IDENTIFIER = re.compile(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*")
_CALL = re.compile(r"\s*\(")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: the identifiers left once strings,
    label matchers, ranges and label lists are removed, that are no function call and no
    keyword. Enough for the expressions we ship; not a PromQL parser."""
    bare = _STRINGS.sub('""', expr)
    bare = _MATCHERS.sub(" ", bare)
    bare = _RANGES.sub(" ", bare)
    bare = _LABEL_LISTS.sub(" ", bare)
    return {
        found.group(0)
        for found in _IDENTIFIER.finditer(bare)
        if not _CALL.match(bare, found.end()) and found.group(0).lower() not in _KEYWORDS
    }


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of the shipped rule files."""
    return [
        rule
        for path in RULES
        for group in load_yaml(path)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
