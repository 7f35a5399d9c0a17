"""The service's one settings class: every `WEBHOOKS_*` variable, validated at start-up.

Variables come from the environment and from `.env`. Lists are comma-separated; durations are
written `500ms`, `10s`, `5m`, `2h`, `5d`, and a bare number means seconds (docs/contract.md,
"Configuration").
"""

from __future__ import annotations

import enum
import re
import ssl
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.signing import Scheme, parse_schemes

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Seconds from `500ms`, `10s`, `5m`, `2h`, `5d` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 500ms, 10s, 5m, 2h or 5d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(
            f"{value!r} is not a duration: write 500ms, 10s, 5m, 2h, 5d or a number of seconds"
        )
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _duration_list(value: object) -> list[float]:
    items = _split_list(value)
    if not isinstance(items, list | tuple):
        raise ValueError("expected a comma-separated list of durations, e.g. 5s,5m,30m")
    return [parse_duration(item) for item in items]


Duration = Annotated[float, BeforeValidator(parse_duration)]
CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_list)]
DurationList = Annotated[list[float], NoDecode, BeforeValidator(_duration_list)]
# `legacy,quantum,standard`, or an earlier revision's single value (`both`, `legacy`, `quantum`).
Schemes = Annotated[tuple[Scheme, ...], NoDecode, BeforeValidator(parse_schemes)]


class OffsetReset(enum.StrEnum):
    EARLIEST = "earliest"
    LATEST = "latest"


class LogFormat(enum.StrEnum):
    JSON = "json"
    CONSOLE = "console"


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


DEFAULT_TOPICS = [
    "identity.verification.created",
    "identity.customer.kyc_updated",
    "identity.review.overridden",
]
DEFAULT_RETRY_SCHEDULE = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]


class Settings(BaseSettings):
    """Every knob of the service. Build it once in `main`, pass it down explicitly."""

    model_config = SettingsConfigDict(
        env_prefix="WEBHOOKS_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        frozen=True,
        use_enum_values=False,
    )

    # Kafka (docs/contract.md, "Events in")
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_group_id: str = Field("identity-webhooks", min_length=1)
    kafka_topics: CommaList = Field(default_factory=lambda: list(DEFAULT_TOPICS), min_length=1)
    kafka_dlq_topic: str = Field("identity.webhooks.dlq", min_length=1)
    kafka_auto_offset_reset: OffsetReset = OffsetReset.EARLIEST
    max_event_bytes: int = Field(256 * 1024, gt=0)
    # How long the broker may hold a fetch to gather 64 KiB; 0 adapts to the rate: at once
    # below ~200 events/s, up to 5 ms in a stream (see `ingest.fetch_options`).
    kafka_fetch_wait: Duration = Field(0.0, ge=0.0, le=0.5)

    # Store (docs/contract.md, "Storage")
    database_url: str = "sqlite:///var/webhooks.db"
    # PostgreSQL connections one process may hold (docs/performance.md, "Beyond one machine").
    database_pool_size: int = Field(10, ge=2, le=200)
    encryption_key: SecretStr | None = None
    retention: Duration = 30 * 86400.0
    # How long event bodies and response excerpts are kept (the log's metadata is kept for
    # `retention`); a delivery still open keeps its payload until it ends.
    payload_retention: Duration = Field(7 * 86400.0, ge=0)
    # How long the audit trail is kept: its own, never the delivery log's `retention`.
    audit_retention: Duration = Field(365 * 86400.0, gt=0)

    # HTTP API (docs/contract.md, "The API")
    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=1, le=65535)

    # Delivery (docs/contract.md, "Webhooks out")
    # Which signature schemes every delivery carries (an Ed25519 subscription, or one without
    # the HMAC headers, always gets the Standard Webhooks headers: see service/signing.py).
    signature_headers: Schemes = Field(default_factory=lambda: tuple(Scheme))
    retry_schedule: DurationList = Field(default_factory=lambda: list(DEFAULT_RETRY_SCHEDULE))
    delivery_timeout: Duration = 10.0
    delivery_connect_timeout: Duration = 3.0
    disable_after: Duration = 5 * 86400.0
    # When a subscription's run of failures is announced (`webhook.subscription.failing`): after
    # this many failed attempts in a row, or once the first is this old, whichever is first.
    failing_after_attempts: int = Field(5, ge=1)
    failing_after: Duration = Field(3600.0, gt=0)
    allow_private_targets: bool = False
    lane_concurrency: int = Field(10, ge=1, le=256)
    lane_queue_size: int = Field(200, ge=1, le=100_000)
    max_connections: int = Field(512, ge=1)
    shutdown_grace: Duration = 10.0
    # How long a replica holds a delivery it took (by the database's clock), renewed every third
    # of it while queued or in flight: a crashed replica's work is retaken this soon on
    # PostgreSQL (an embedded SQLite store's one owner takes back every lease when it starts).
    lease: Duration = Field(30.0, gt=0)
    poll_interval: Duration = 1.0
    index_refresh: Duration = 2.0
    # A PEM file of CAs trusted beside the system's on every TLS connection deliveries make
    # (endpoints and OAuth token URLs), for customers on a private PKI.
    tls_ca_file: str | None = None

    # Polling subscriptions (docs/api.md, "Polling subscriptions"): the longest a read of a feed
    # waits for something to arrive (`wait=` is cut to it), and how old the oldest unread
    # delivery of a feed may get before its reader counts as behind.
    feed_wait_max: Duration = Field(30.0, gt=0, le=30)
    feed_behind: Duration = Field(900.0, gt=0)

    # Logs (docs/contract.md, "Observability")
    log_format: LogFormat = LogFormat.JSON
    log_level: LogLevel = LogLevel.INFO

    # Optional tracing (service/tracing.py): the OTLP/HTTP endpoint spans go to; off when unset.
    otlp_endpoint: str | None = Field(None, pattern=r"^https?://[^\s/]+")

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _bootstrap_has_ports(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"{server.strip()!r} is not host:port")
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return value

    @field_validator("tls_ca_file")
    @classmethod
    def _ca_file_readable(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ssl.create_default_context().load_verify_locations(cafile=value)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot be read as a PEM file of CA certificates ({exc})") from None
        return value

    @field_validator("retry_schedule")
    @classmethod
    def _schedule_not_empty(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("needs at least one delay, e.g. 5s,5m,30m")
        return value

    @model_validator(mode="after")
    def _timeouts_consistent(self) -> Settings:
        if self.delivery_connect_timeout > self.delivery_timeout:
            raise ValueError(
                "WEBHOOKS_DELIVERY_CONNECT_TIMEOUT cannot exceed WEBHOOKS_DELIVERY_TIMEOUT"
            )
        if self.delivery_timeout <= 0:
            raise ValueError("WEBHOOKS_DELIVERY_TIMEOUT must be greater than zero")
        if self.payload_retention > self.retention:
            raise ValueError(
                "WEBHOOKS_PAYLOAD_RETENTION cannot exceed WEBHOOKS_RETENTION (payloads go with "
                "their events at the latest)"
            )
        return self

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql://", "postgres://"))

    def effective(self) -> dict[str, Any]:
        """The configuration as it will be used, secrets masked: safe to log."""
        shown = self.model_dump(mode="json")
        shown["database_url"] = mask_password(self.database_url)
        return shown


# libpq also reads a password from the query string (`?password=`, `?sslpassword=`).
_QUERY_PASSWORD = re.compile(r"(?i)([?&;][a-z_]*pass(?:word|wd)?=)[^&;#]*")
# Settings whose value is never shown in an error, not even masked.
_HIDDEN = ("encryption_key", "secret", "password", "token")


def mask_password(url: str) -> str:
    """`url` with every password form masked: `user:***@` in the user-info (up to the last `@`,
    since a raw `@` or `/` in a password is common) and `password=***` in the query."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        userinfo, _, hostpart = rest.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        if colon:
            rest = f"{user}:***@{hostpart}"
    return _QUERY_PASSWORD.sub(r"\1***", f"{scheme}{sep}{rest}")


class SettingsError(Exception):
    """The environment does not describe a valid configuration; `str()` is for people."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))
        self.problems = problems


def load_settings(**overrides: Any) -> Settings:
    """Read the settings from the environment, turning pydantic's errors into readable lines."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError([_describe(error) for error in exc.errors()]) from None


def _describe(error: Any) -> str:
    location = [str(part) for part in error.get("loc", ()) if not isinstance(part, int)]
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if not location:
        return message
    variable = "WEBHOOKS_" + location[0].upper()
    given = error.get("input")
    if given is None or any(word in location[0].lower() for word in _HIDDEN):
        return f"{variable}: {message}"
    if location[0].lower() == "database_url":
        given = mask_password(str(given))
    return f"{variable}: {message} (got {given!r})"
