"""Optional OpenTelemetry tracing: a span per consumed Kafka batch and one per delivery attempt.

Off unless `WEBHOOKS_OTLP_ENDPOINT` is set, and then only with the `tracing` extra installed
(opentelemetry-sdk and its OTLP/HTTP exporter), which is imported only at that point: without
either, every helper here is a no-op that costs a function call. Prometheus stays the primary
signal; spans are for following one event or one slow attempt. A span carries ids, names,
counts, a result class and a status code: never a payload, a URL, a header or a secret.

Build one `Tracing` per process with `open_tracing(settings)`, pass it to whoever makes spans,
and `close()` it last (it flushes the spans still buffered). Spans go to a provider of this
object's own, not to OpenTelemetry's global one, so nothing else in the process is affected.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import structlog

from service import __version__
from service.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

log = structlog.get_logger(__name__)

# What a span attribute holds here: ids, names, counts, lists of names.
Attribute = str | int | list[str]

SERVICE_NAME = "identity-webhooks"
BATCH_SPAN = "webhooks.batch"
ATTEMPT_SPAN = "webhooks.attempt"


class AttemptSpan:
    """What an attempt tells its span once it knows how it went (nothing when tracing is off)."""

    def __init__(self, span: Span | None = None) -> None:
        self._span = span

    def outcome(self, result: str, status: int | None = None) -> None:
        """The attempt's result class (`2xx`, `5xx`, `timeout`, …) and HTTP status, if any."""
        if self._span is None:
            return
        self._span.set_attribute("webhooks.attempt.result", result)
        if status is not None:
            self._span.set_attribute("http.response.status_code", status)


_NO_ATTEMPT_SPAN = nullcontext(AttemptSpan())


class Tracing:
    """Makes the service's spans; `Tracing()` is the no-op used when tracing is off."""

    def __init__(
        self, tracer: Tracer | None = None, provider: TracerProvider | None = None
    ) -> None:
        self._tracer = tracer
        self._provider = provider

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    @contextmanager
    def batch_span(self, partitions: Mapping[tuple[str, int], int]) -> Iterator[None]:
        """Around the handling of one fetched batch: parse, dead-letter, record, hand over to
        dispatch. `partitions` maps each (topic, partition) in it to its record count (one
        `getmany()` may span several). Attempts started inside it become its children."""
        if self._tracer is None:
            yield
            return
        topics = sorted({topic for topic, _ in partitions})
        attributes: dict[str, Attribute] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.batch.message_count": sum(partitions.values()),
            "webhooks.batch.partitions": [f"{t}/{p}" for t, p in sorted(partitions)],
        }
        if len(topics) == 1:
            attributes["messaging.destination.name"] = topics[0]
        if len(partitions) == 1:
            ((_, partition),) = partitions
            attributes["messaging.destination.partition.id"] = str(partition)
        with self._span(BATCH_SPAN, "CONSUMER", attributes):
            yield

    def attempt_span(
        self,
        delivery_id: str,
        subscription_id: str,
        event_id: str,
        event: str,
        number: int | None = None,
    ) -> AbstractContextManager[AttemptSpan]:
        """Around one HTTP attempt of one delivery (its `number`, 1 for the first), from
        signing to the classified result. Without tracing, one shared no-op: an attempt is
        made per delivery, and a generator's context manager is several objects each time."""
        if self._tracer is None:
            return _NO_ATTEMPT_SPAN
        return self._attempt_span(delivery_id, subscription_id, event_id, event, number)

    @contextmanager
    def _attempt_span(
        self,
        delivery_id: str,
        subscription_id: str,
        event_id: str,
        event: str,
        number: int | None,
    ) -> Iterator[AttemptSpan]:
        attributes: dict[str, Attribute] = {
            "webhooks.delivery.id": delivery_id,
            "webhooks.subscription.id": subscription_id,
            "webhooks.event.id": event_id,
            "webhooks.event.name": event,
        }
        if number is not None:
            attributes["webhooks.attempt.number"] = number
        with self._span(ATTEMPT_SPAN, "CLIENT", attributes) as span:
            yield AttemptSpan(span)

    @contextmanager
    def _span(self, name: str, kind: str, attributes: Mapping[str, Attribute]) -> Iterator[Span]:
        # Loaded only when tracing is on, and by then already imported by `open_tracing`.
        from opentelemetry.trace import SpanKind, Status, StatusCode  # noqa: PLC0415

        assert self._tracer is not None
        # An exception's message may quote a payload or a URL: the span gets its type only.
        with self._tracer.start_as_current_span(
            name,
            kind=SpanKind[kind],
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except Exception as exc:
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise

    def close(self) -> None:
        """Sends what is buffered and stops the exporter; call it once, at shutdown."""
        if self._provider is not None:
            self._provider.shutdown()
            self._provider = None
            self._tracer = None


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL: an endpoint given without a path gets `/v1/traces`."""
    if urlsplit(endpoint).path in ("", "/"):
        return endpoint.rstrip("/") + "/v1/traces"
    return endpoint


def open_tracing(settings: Settings, exporter: SpanExporter | None = None) -> Tracing:
    """Tracing as configured: OTLP/HTTP to `settings.otlp_endpoint`, or to `exporter` when given
    (tests); the no-op `Tracing()` when neither is, or when the `tracing` extra is missing."""
    if settings.otlp_endpoint is None and exporter is None:
        return Tracing()
    try:
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
    except ImportError:
        log.warning(
            "tracing.unavailable",
            hint="WEBHOOKS_OTLP_ENDPOINT is set but the `tracing` extra is not installed: "
            "pip install 'identity-webhooks[tracing]'",
        )
        return Tracing()
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )

        assert settings.otlp_endpoint is not None
        exporter = OTLPSpanExporter(endpoint=traces_url(settings.otlp_endpoint))
    resource = Resource.create({"service.name": SERVICE_NAME, "service.version": __version__})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    log.info("tracing.enabled", endpoint=settings.otlp_endpoint)
    return Tracing(provider.get_tracer(__name__, __version__), provider)
