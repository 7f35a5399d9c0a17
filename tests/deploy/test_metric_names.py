"""Every metric the alert rules and the dashboard read is one the service really exports, as
`GET /metrics` renders it from a fresh `Metrics`, or one named below from another exporter."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import Metrics
from tests.support.deploy import alerts, dashboard_queries, metric_names

# Series other exporters provide, each with why the rules need it.
EXTERNAL = {
    "up": "Prometheus's own per-target series: a replica it cannot scrape at all",
    "kube_deployment_status_replicas_unavailable": "kube-state-metrics: replicas whose /readyz "
    "probe fails (the service exports no readiness of its own)",
}
# The series names each metric type renders as (Prometheus text format, prometheus_client).
SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}


async def exported_series() -> set[str]:
    """Series names from the real /metrics route. A labelled family with no children yet
    renders only its HELP and TYPE lines, so names come from the family and its type, not
    from samples alone."""
    app = web.Application()
    app.router.add_routes([Metrics().route()])
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        response = await client.get("/metrics")
        assert response.status == 200
        text = await response.text()
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type]}
        names |= {sample.name for sample in family.samples}
    return names


async def test_the_export_is_read_as_expected() -> None:
    names = await exported_series()
    assert {
        "webhooks_attempts_total",
        "webhooks_attempt_duration_seconds_bucket",
        "webhooks_end_to_end_latency_seconds_bucket",
        "webhooks_consumer_lag",
        "webhooks_pending_deliveries",
    } <= names
    assert "webhooks_attempts" not in names  # a counter is read by its _total series


async def test_alerts_read_only_exported_metrics() -> None:
    exported = await exported_series()
    for rule in alerts():
        used = metric_names(rule["expr"])
        assert used, rule["alert"]
        unknown = used - exported - set(EXTERNAL)
        assert not unknown, f"{rule['alert']} reads {sorted(unknown)}, not in /metrics"


async def test_dashboard_reads_only_exported_metrics() -> None:
    exported = await exported_series()
    used: set[str] = set()
    for query in dashboard_queries():
        names = metric_names(query)
        assert names, query
        used |= names
    assert not used - exported, f"the dashboard reads {sorted(used - exported)}, not in /metrics"
    assert not used & set(EXTERNAL)
