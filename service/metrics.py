"""Prometheus metrics (docs/contract.md, "Observability"), prefix `webhooks_`, on a registry of
the app's own.

No per-subscription label: with thousands of subscriptions that would be thousands of series per
metric. Per-subscription summaries are in the API instead.
"""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

M = TypeVar("M", Counter, Gauge, Histogram)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)


class Metrics:
    """Every metric the service exports; one instance per app, passed to whoever counts."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry
        self.events_consumed = Counter(
            "webhooks_events_consumed", "Kafka records accepted", ["topic", "event"], registry=r
        )
        self.events_skipped = Counter(
            "webhooks_events_skipped",
            "well-formed events outside the catalog, skipped",
            ["topic", "event"],
            registry=r,
        )
        self.events_dead_lettered = Counter(
            "webhooks_events_dead_lettered",
            "records sent to the dead-letter topic",
            ["topic", "reason"],
            registry=r,
        )
        self.events_filtered = Counter(
            "webhooks_events_filtered",
            "deliveries not made because the subscription's content filter refused the event, "
            "by event",
            ["event"],
            registry=r,
        )
        self.deliveries = Counter(
            "webhooks_deliveries",
            "deliveries by event and outcome (created, sent, failed, duplicate)",
            ["event", "outcome"],
            registry=r,
        )
        self.attempts = Counter(
            "webhooks_attempts", "HTTP attempts by result class", ["result"], registry=r
        )
        self.attempt_duration = Histogram(
            "webhooks_attempt_duration_seconds",
            "time of one HTTP attempt",
            ["result"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end = Histogram(
            "webhooks_end_to_end_latency_seconds",
            "occurredAt to the first 2xx",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.pending = Gauge(
            "webhooks_pending_deliveries", "deliveries pending or retrying", registry=r
        )
        self.consumer_lag = Gauge(
            "webhooks_consumer_lag",
            "records behind the partition's high watermark (never negative)",
            ["topic", "partition"],
            registry=r,
        )
        self.offsets_committed = Counter(
            "webhooks_offsets_committed",
            "offset commits made after the records were recorded",
            ["topic"],
            registry=r,
        )
        self.subscriptions = Gauge(
            "webhooks_subscriptions", "subscriptions by state", ["state"], registry=r
        )
        self.sealed_rows = Gauge(
            "webhooks_sealed_rows",
            "sealed values in the store by the key that sealed them: current, older (another "
            "configured key), unknown (no configured key opens them), clear (an older "
            "revision's); counted by housekeeping every purge interval",
            ["state"],
            registry=r,
        )
        self.lanes = Gauge("webhooks_lanes", "subscription lanes holding work", registry=r)
        self.lanes_circuit_open = Gauge(
            "webhooks_lanes_circuit_open",
            "lanes whose endpoint failed so often that they wait between attempts",
            registry=r,
        )
        self.lane_overflow = Counter(
            "webhooks_lane_overflow",
            "deliveries left in the store because their lane was full",
            registry=r,
        )
        self.dlq_write_failures = Counter(
            "webhooks_dlq_write_failures",
            "dead-letter writes the broker refused or could not take, by error",
            ["error"],
            registry=r,
        )
        self.partitions_held_for_dlq = Gauge(
            "webhooks_partitions_held_for_dlq",
            "partitions paused because a rejected record is not dead-lettered yet",
            registry=r,
        )
        self.connections_in_use = Gauge(
            "webhooks_connections_in_use",
            "HTTP connection slots held by attempts (of WEBHOOKS_MAX_CONNECTIONS)",
            registry=r,
        )
        self.lanes_waiting_for_connection = Gauge(
            "webhooks_lanes_waiting_for_connection",
            "lanes with work waiting for a free connection slot",
            registry=r,
        )
        self.token_fetches = Counter(
            "webhooks_token_fetches",
            "OAuth access tokens asked of subscriptions' token endpoints, by outcome (ok, failed)",
            ["outcome"],
            registry=r,
        )
        self.client_certificates_expiring = Gauge(
            "webhooks_client_certificates_expiring",
            "active subscriptions whose mTLS client certificate ends within 30 days (or has ended)",
            registry=r,
        )
        self.feeds = Gauge(
            "webhooks_feeds",
            "active polling subscriptions (their deliveries read from a feed)",
            registry=r,
        )
        self.feeds_behind = Gauge(
            "webhooks_feeds_behind",
            "active polling subscriptions whose oldest unread delivery entered the feed more "
            "than WEBHOOKS_FEED_BEHIND ago; counted by housekeeping every few seconds",
            registry=r,
        )
        self.store_errors = Counter(
            "webhooks_store_errors", "store operations that failed", ["operation"], registry=r
        )
        self.leases_lost = Counter(
            "webhooks_leases_lost",
            "deliveries this replica stopped holding before it recorded or sent them (another "
            "replica took them after the lease ran out)",
            registry=r,
        )

    def child(self, metric: M, *values: str) -> M:
        """`metric.labels(*values)`, remembered: the hot path counts every delivery, and
        `labels()` takes a lock and builds a key each time. Only for bounded label values."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def route(self) -> web.RouteDef:
        async def metrics(_: web.Request) -> web.Response:
            return web.Response(
                body=generate_latest(self.registry),
                headers={"Content-Type": CONTENT_TYPE_LATEST},
            )

        return web.get("/metrics", metrics)
