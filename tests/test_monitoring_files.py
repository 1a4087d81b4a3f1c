"""infra/monitoring/ checked by the tools that load it (promtool, amtool, blackbox-exporter),
the alert rules unit-tested by `promtool test rules`, and their contracts with the engine:
the labels of the alerts that start runbooks route to that runbook and target with the
example config, the Alertmanager receiver authenticates as the intake expects, and every
metric the rules and the dashboard read is one the engine or an exporter exports."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest

from activities.config import parse_config
from tests.monitoring import (
    DASHBOARD,
    DASHBOARD_METRICS,
    EXAMPLE_CONFIG,
    MONITORING,
    RULE_METRICS,
    RULES,
    RULES_TEST,
    alert_rules,
    binary,
    load_yaml,
    metric_names,
)
from workers.metrics import OUTCOMES
from workers.routing import route_for
from workers.webhook_auth import credential_matches
from workflows.models import AlertContext, RunStatus
from workflows.names import RUNBOOK_WORKFLOW_TYPES

pytestmark = pytest.mark.timeout(60)


def run(*command: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}{done.stderr}"
    return done


def test_promtool_accepts_the_rules_and_the_scrape_config() -> None:
    promtool = binary("promtool")
    assert RULES, "no rule files under infra/monitoring/rules"
    checked = run(promtool, "check", "rules", *map(str, RULES))
    assert checked.stdout.count("SUCCESS") == len(RULES)
    # The scrape config names its rule files by a glob relative to itself: it finds them all.
    config = run(promtool, "check", "config", str(MONITORING / "prometheus.yml"))
    assert f"SUCCESS: {len(RULES)} rule files found" in config.stdout


def test_every_alert_fires_as_its_unit_tests_say() -> None:
    """`promtool test rules`: each alert pending, firing (with its labels and annotations)
    and quiet where it must be; see infra/monitoring/rules.test.yml."""
    run(binary("promtool"), "test", "rules", str(RULES_TEST))
    tested = {
        case["alertname"]
        for test in load_yaml(RULES_TEST)["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert tested == {rule["alert"] for rule in alert_rules()}, "an alert without a unit test"


def test_amtool_and_blackbox_exporter_accept_their_configs() -> None:
    run(binary("amtool"), "check-config", str(MONITORING / "alertmanager.yml"))
    blackbox = MONITORING / "blackbox.yml"
    run(binary("blackbox_exporter"), "--config.check", f"--config.file={blackbox}")


def engine_receiver() -> dict[str, Any]:
    config = load_yaml(MONITORING / "alertmanager.yml")
    (receiver,) = [r for r in config["receivers"] if r["name"] == "remediation-engine"]
    (webhook,) = receiver["webhook_configs"]
    assert isinstance(webhook, dict)
    return webhook


def test_the_receiver_sends_resolved_alerts_with_a_credential_from_a_file() -> None:
    webhook = engine_receiver()
    assert webhook["url"].endswith("/alerts/alertmanager")
    assert webhook["send_resolved"] is True
    authorization = webhook["http_config"]["authorization"]
    # A reference to the secret, never the secret: no inline `credentials`.
    assert set(authorization) == {"type", "credentials_file"}
    # Alertmanager sends `Authorization: <type> <file's content>`; the intake takes it.
    assert credential_matches(f"{authorization['type']} the-token", ["the-token"])


def test_only_alerts_with_a_runbook_reach_the_engine() -> None:
    route = load_yaml(MONITORING / "alertmanager.yml")["route"]
    (engine,) = [r for r in route["routes"] if r["receiver"] == "remediation-engine"]
    assert engine["matchers"] == ['runbook=~".+"']
    assert engine["continue"] is True  # on-call hears about it as well
    assert {"alertname", "target"} <= set(engine["group_by"])
    assert route["receiver"] != "remediation-engine"
    # Each alert either starts a runbook or is about the engine itself (which goes to people:
    # an engine told that it is down cannot act on it).
    for rule in alert_rules():
        starts_a_run = "runbook" in rule["labels"]
        about_the_engine = rule["labels"].get("component") == "remediation-engine"
        assert starts_a_run != about_the_engine, rule["alert"]


def test_the_alerts_that_start_runbooks_route_to_them_with_the_example_config() -> None:
    """The labels `promtool test rules` proves each alert fires with, through the example
    config's [[routes]]: the route's runbook and target are the alert's `runbook` and
    `target` labels."""
    config = parse_config(EXAMPLE_CONFIG.read_text(), source=str(EXAMPLE_CONFIG))
    fired = [
        expected["exp_labels"]
        for test in load_yaml(RULES_TEST)["tests"]
        for case in test["alert_rule_test"]
        for expected in case["exp_alerts"]
        if "runbook" in expected["exp_labels"]
    ]
    assert {labels["alertname"] for labels in fired} == {"PostgresTooManyConnections", "SiteDown"}
    for labels in fired:
        alert = AlertContext(source="alertmanager", name=labels["alertname"], labels=labels)
        route = route_for(config, alert)
        assert route is not None, f"no route of {EXAMPLE_CONFIG.name} matches {labels}"
        assert (route.runbook, route.target) == (labels["runbook"], labels["target"])
        assert route.runbook in RUNBOOK_WORKFLOW_TYPES


def test_the_rules_read_only_metrics_that_exist() -> None:
    for rule in alert_rules():
        unknown = metric_names(rule["expr"]) - RULE_METRICS
        assert not unknown, f"{rule['alert']} reads {unknown}: exported by nothing we ship"


def test_remediation_failed_counts_the_statuses_of_failed_runs() -> None:
    (rule,) = [r for r in alert_rules() if r["alert"] == "RemediationFailed"]
    (statuses,) = re.findall(r'status=~"([^"]*)"', rule["expr"])
    failed = {RunStatus.ESCALATED, RunStatus.ABORTED, RunStatus.STOPPED}
    assert set(statuses.split("|")) == {s.value for s in failed}
    # ... each of which the service exports (its gauge has the finished statuses only).
    assert failed <= set(OUTCOMES)


def dashboard_targets(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def test_the_dashboard_reads_metrics_that_exist_from_a_chosen_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = dashboard["templating"]["list"]
    assert (variable["type"], variable["query"], variable["name"]) == (
        "datasource",
        "prometheus",
        "datasource",
    )
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    queries = dashboard_targets(dashboard)
    assert len(queries) > 10
    for panel in panels:
        if panel["type"] == "row":
            continue
        # No datasource uid of one Grafana: the variable, so the JSON imports anywhere.
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert all(t["datasource"] == panel["datasource"] for t in panel["targets"])
    for title, expr in queries:
        names = metric_names(expr)
        assert names, f"panel {title!r}: no metric in {expr!r}"
        unknown = names - DASHBOARD_METRICS
        assert not unknown, f"panel {title!r} reads {unknown}, which nothing exports"
