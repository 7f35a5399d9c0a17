"""Optional tracing: no-op without an endpoint or the extra; with them, a span per batch and per
attempt carrying ids and outcomes, never a payload or an exception's message."""

from __future__ import annotations

import sys

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from service.settings import Settings, SettingsError, load_settings
from service.tracing import ATTEMPT_SPAN, BATCH_SPAN, open_tracing, traces_url


def _settings(otlp_endpoint: str | None = None) -> Settings:
    return Settings(_env_file=None, otlp_endpoint=otlp_endpoint)


def test_off_without_an_endpoint() -> None:
    tracing = open_tracing(_settings())
    assert not tracing.enabled
    with (
        tracing.batch_span({("identity.review.overridden", 0): 3}),
        tracing.attempt_span("whd_1", "whk_1", "evt_1", "review.overridden") as attempt,
    ):
        attempt.outcome("2xx", 204)
    tracing.close()


def test_off_when_the_extra_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    tracing = open_tracing(_settings(otlp_endpoint="http://collector:4318"))
    assert not tracing.enabled


def test_spans_carry_ids_and_outcomes_only() -> None:
    exporter = InMemorySpanExporter()
    tracing = open_tracing(_settings(), exporter=exporter)
    assert tracing.enabled
    with (
        tracing.batch_span({("identity.verification.created", 2): 5}),
        tracing.attempt_span("whd_01", "whk_01", "evt_01", "verification.created", 1) as attempt,
    ):
        attempt.outcome("5xx", 503)
    tracing.close()

    spans = {span.name: span for span in exporter.get_finished_spans()}
    batch, attempt_span = spans[BATCH_SPAN], spans[ATTEMPT_SPAN]
    assert batch.kind is SpanKind.CONSUMER
    assert dict(batch.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.batch.message_count": 5,
        "webhooks.batch.partitions": ("identity.verification.created/2",),
        "messaging.destination.name": "identity.verification.created",
        "messaging.destination.partition.id": "2",
    }
    assert attempt_span.kind is SpanKind.CLIENT
    assert dict(attempt_span.attributes or {}) == {
        "webhooks.delivery.id": "whd_01",
        "webhooks.subscription.id": "whk_01",
        "webhooks.event.id": "evt_01",
        "webhooks.event.name": "verification.created",
        "webhooks.attempt.number": 1,
        "webhooks.attempt.result": "5xx",
        "http.response.status_code": 503,
    }
    assert attempt_span.parent is not None
    assert attempt_span.parent.span_id == batch.context.span_id
    assert batch.resource.attributes["service.name"] == "identity-webhooks"


def test_a_batch_over_several_partitions() -> None:
    exporter = InMemorySpanExporter()
    tracing = open_tracing(_settings(), exporter=exporter)
    counts = {("identity.review.overridden", 1): 2, ("identity.customer.kyc_updated", 0): 4}
    with tracing.batch_span(counts):
        pass
    tracing.close()

    (span,) = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert attributes["messaging.batch.message_count"] == 6
    assert attributes["webhooks.batch.partitions"] == (
        "identity.customer.kyc_updated/0",
        "identity.review.overridden/1",
    )
    assert "messaging.destination.name" not in attributes
    assert "messaging.destination.partition.id" not in attributes


def test_an_error_is_named_by_its_type_never_its_message() -> None:
    exporter = InMemorySpanExporter()
    tracing = open_tracing(_settings(), exporter=exporter)
    with (
        pytest.raises(ValueError, match="payload"),
        tracing.attempt_span("whd_02", "whk_02", "evt_02", "customer.kyc_updated"),
    ):
        raise ValueError('payload {"customerId": "cus_secret"}')
    tracing.close()

    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValueError"
    assert not span.events
    assert "cus_secret" not in str(span.to_json())


def test_traces_url() -> None:
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("https://otel.example/") == "https://otel.example/v1/traces"
    assert traces_url("http://collector:4318/v1/traces") == "http://collector:4318/v1/traces"


def test_the_endpoint_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")  # no developer's .env
    monkeypatch.setenv("WEBHOOKS_OTLP_ENDPOINT", "http://collector:4318")
    assert load_settings().otlp_endpoint == "http://collector:4318"
    monkeypatch.setenv("WEBHOOKS_OTLP_ENDPOINT", "collector:4318")
    with pytest.raises(SettingsError, match="WEBHOOKS_OTLP_ENDPOINT"):
        load_settings()
