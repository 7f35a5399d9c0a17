"""The settings class reads `WEBHOOKS_*`, parses durations and lists, and explains bad values."""

from __future__ import annotations

import os

import pytest
from pydantic import SecretStr

from service.settings import (
    DEFAULT_RETRY_SCHEDULE,
    SettingsError,
    load_settings,
    parse_duration,
)
from service.signing import ALL_SCHEMES, Scheme


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("WEBHOOKS_") and not name.startswith("WEBHOOKS_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir("/")  # no developer's .env


def test_defaults_work_locally() -> None:
    settings = load_settings()
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.http_port == 8080
    assert settings.retry_schedule == DEFAULT_RETRY_SCHEDULE
    assert settings.signature_headers == ALL_SCHEMES
    assert settings.database_url.startswith("sqlite:///")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10),
        ("5m", 300),
        ("2h", 7200),
        ("5d", 432000),
        ("7", 7),
        ("1.5", 1.5),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_lists_and_durations_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOKS_KAFKA_TOPICS", "a, b,c")
    monkeypatch.setenv("WEBHOOKS_RETRY_SCHEDULE", "1s,2s,500ms")
    monkeypatch.setenv("WEBHOOKS_DISABLE_AFTER", "2d")
    settings = load_settings()
    assert settings.kafka_topics == ["a", "b", "c"]
    assert settings.retry_schedule == [1.0, 2.0, 0.5]
    assert settings.disable_after == 172800.0


@pytest.mark.parametrize(
    ("value", "schemes"),
    [
        ("legacy,quantum,standard", ALL_SCHEMES),
        ("standard", (Scheme.STANDARD,)),
        ("quantum, standard", (Scheme.QUANTUM, Scheme.STANDARD)),
        # An earlier revision's single values mean what they meant.
        ("both", (Scheme.LEGACY, Scheme.QUANTUM)),
        ("legacy", (Scheme.LEGACY,)),
        ("quantum", (Scheme.QUANTUM,)),
    ],
)
def test_signature_headers_is_a_list_of_schemes(
    monkeypatch: pytest.MonkeyPatch, value: str, schemes: tuple[Scheme, ...]
) -> None:
    monkeypatch.setenv("WEBHOOKS_SIGNATURE_HEADERS", value)
    settings = load_settings()
    assert settings.signature_headers == schemes
    assert settings.effective()["signature_headers"] == [s.value for s in schemes]


def test_no_signature_scheme_is_refused_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOKS_SIGNATURE_HEADERS", " , ")
    with pytest.raises(SettingsError, match="WEBHOOKS_SIGNATURE_HEADERS: name at least one"):
        load_settings()


def test_bad_values_get_readable_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOKS_HTTP_PORT", "eighty")
    monkeypatch.setenv("WEBHOOKS_RETRY_SCHEDULE", "5s,soon")
    monkeypatch.setenv("WEBHOOKS_SIGNATURE_HEADERS", "sometimes")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    text = str(caught.value)
    assert "WEBHOOKS_HTTP_PORT" in text
    assert "'soon' is not a duration" in text
    assert "WEBHOOKS_SIGNATURE_HEADERS" in text
    assert "'sometimes' is not a signature scheme" in text
    assert len(caught.value.problems) == 3


def test_connect_timeout_cannot_exceed_total(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOKS_DELIVERY_TIMEOUT", "2s")
    monkeypatch.setenv("WEBHOOKS_DELIVERY_CONNECT_TIMEOUT", "3s")
    with pytest.raises(SettingsError, match="CONNECT_TIMEOUT cannot exceed"):
        load_settings()


def test_effective_configuration_hides_secrets() -> None:
    settings = load_settings(
        encryption_key=SecretStr("very-secret-key"),
        database_url="postgresql://svc:hunter2@db:5432/webhooks",
    )
    shown = repr(settings.effective())
    assert "very-secret-key" not in shown
    assert "hunter2" not in shown
    assert "postgresql://svc:***@db:5432/webhooks" in shown


# Every way a PostgreSQL URL can carry a password (libpq reads `password` from the query too).
PASSWORD_FORMS = [
    "postgresql://svc:hunter2@db:5432/webhooks",
    "postgresql://:hunter2@db/webhooks",
    "postgres://svc:hunter2@db/webhooks?sslmode=require",
    "postgresql://svc:hun@ter/2@db/webhooks",
    "postgresql://svc:hunter2@[::1]:5432/webhooks",
    "postgresql://db/webhooks?password=hunter2",
    "postgresql://svc@db/webhooks?sslmode=require&password=hunter2&application_name=x",
    "postgresql://svc@db/webhooks?PASSWORD=hunter2",
    "postgresql://svc@db/webhooks?sslpassword=hunter2",
    "postgresql://svc@db/webhooks?password=hunter2#frag",
]


@pytest.mark.parametrize("url", PASSWORD_FORMS)
def test_effective_configuration_masks_every_password_form(url: str) -> None:
    shown = repr(load_settings(database_url=url).effective())
    assert "hunter2" not in shown
    assert "hun@ter" not in shown
    assert "***" in shown


@pytest.mark.parametrize("url", ["mysql://" + u.partition("://")[2] for u in PASSWORD_FORMS])
def test_a_settings_error_never_echoes_a_password(url: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(database_url=url)
    text = str(caught.value)
    assert "WEBHOOKS_DATABASE_URL" in text
    assert "hunter2" not in text
    assert "hun@ter" not in text


def test_a_bad_encryption_key_is_never_echoed() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(encryption_key=["hunter2-key"])
    assert "WEBHOOKS_ENCRYPTION_KEY" in str(caught.value)
    assert "hunter2" not in str(caught.value)
