"""The alert rules pass promtool's checks and unit tests, each links to its own section of
docs/runbook.md, and every dashboard query is PromQL that promtool accepts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.support.deploy import (
    DASHBOARD,
    REPO,
    RULES,
    alerts,
    dashboard_queries,
    load_yaml,
    run,
    tool,
)

RULE_TESTS = REPO / "deploy" / "prometheus" / "alerts_test.yml"
RUNBOOK_BASE = "https://github.com/quantum-elixir/identity-webhooks/blob/main/docs/runbook.md#"
# What the issue asks an alert for, and the alert that answers it.
REQUIRED_ALERTS = {
    "consumer lag high": "WebhooksConsumerLagHigh",
    "failure ratio high": "WebhooksFailureRatioHigh",
    "dead letters above zero": "WebhooksDeadLetters",
    "pending backlog growing": "WebhooksPendingBacklogGrowing",
    "a subscription auto-disabled": "WebhooksSubscriptionDeactivated",
    "circuit breakers open": "WebhooksCircuitsOpen",
    "readiness failing": "WebhooksReadinessFailing",
    "store errors": "WebhooksStoreErrors",
}


def test_promtool_checks_the_rules() -> None:
    out = run(tool("promtool"), "check", "rules", str(RULES))
    assert f"SUCCESS: {len(alerts())} rules found" in out


def test_promtool_unit_tests_pass() -> None:
    out = run(tool("promtool"), "test", "rules", str(RULE_TESTS), cwd=RULE_TESTS.parent)
    assert "SUCCESS" in out


def test_every_alert_has_a_unit_test() -> None:
    tested = {
        case["alertname"]
        for test in load_yaml(RULE_TESTS)["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {rule["alert"] for rule in alerts()} == tested


def test_the_issue_s_alerts_exist_with_severity_and_summary() -> None:
    by_name = {rule["alert"]: rule for rule in alerts()}
    assert set(REQUIRED_ALERTS.values()) <= set(by_name)
    for rule in by_name.values():
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"]


def _github_anchor(heading: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def runbook_anchors() -> set[str]:
    runbook = REPO / "docs" / "runbook.md"
    if not runbook.is_file():
        pytest.fail("there is no docs/runbook.md")
    lines = runbook.read_text().splitlines()
    return {_github_anchor(line[3:]) for line in lines if line.startswith("## ")}


def test_each_runbook_url_points_at_its_own_runbook_section() -> None:
    anchors = runbook_anchors()
    for rule in alerts():
        url = rule["annotations"]["runbook_url"]
        assert url == RUNBOOK_BASE + rule["alert"].lower(), url
        assert url.removeprefix(RUNBOOK_BASE) in anchors, f"runbook has no '## {rule['alert']}'"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule, with Grafana's variables filled in."""
    queries = dashboard_queries()
    assert len(queries) >= 20
    records = []
    for number, query in enumerate(queries):
        expr = query.replace("$__rate_interval", "5m").replace("$namespace", ".*")
        if expr.startswith("label_values("):
            continue
        records.append({"record": f"dashboard:query_{number}", "expr": expr})
    rules = tmp_path / "dashboard_rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    run(tool("promtool"), "check", "rules", str(rules))


def test_dashboard_has_the_panels_sres_look_for() -> None:
    board = json.loads(DASHBOARD.read_text())
    titles = " | ".join(panel["title"].lower() for panel in board["panels"])
    for words in (
        "consumed /s", "deliveries /s", "end-to-end latency", "attempt duration",
        "failed attempts /s by class", "consumer lag per partition", "pending deliveries",
        "dead-lettered", "open circuits", "subscriptions by state",
    ):  # fmt: skip
        assert words in titles, words
    queries = " ".join(dashboard_queries())
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, " in queries
