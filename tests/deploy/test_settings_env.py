"""Every `WEBHOOKS_*` variable the compose file and the rendered manifests set is a field of
`Settings`, their values load, and every setting a deployment cannot do without is set."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

from service.settings import Settings, SettingsError, load_settings
from tests.support.deploy import OVERLAYS, REPO, load_yaml

COMPOSE = REPO / "deploy" / "docker-compose.yml"
SECRET_TEMPLATE = REPO / "k8s" / "base" / "secret.template.yaml"
PREFIX = "WEBHOOKS_"
# Settings whose defaults suit one process on SQLite, not replicas on PostgreSQL: a deployment
# must set them, on top of any field without a default.
DEPLOYMENT_REQUIRED = {"database_url", "encryption_key", "kafka_bootstrap_servers", "http_host"}
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")

Env = dict[str, str]


def required_settings() -> set[str]:
    fields = Settings.model_fields
    return {name for name, info in fields.items() if info.is_required()} | DEPLOYMENT_REQUIRED


def _interpolate(value: str) -> str:
    """Compose's `${NAME:-default}`, taking the default (the file as it ships)."""
    return _INTERPOLATION.sub(lambda m: m.group(2) or "", value)


def _as_env(environment: Any) -> Env:
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {str(k): _interpolate(str(v)) for k, v in (environment or {}).items()}


def compose_environments() -> dict[str, Env]:
    """The WEBHOOKS_* variables of each compose service that has any."""
    services = load_yaml(COMPOSE)["services"]
    found = {}
    for name, service in services.items():
        env = {k: v for k, v in _as_env(service.get("environment")).items() if k.startswith(PREFIX)}
        if env:
            found[name] = env
    return found


def manifest_environment(docs: list[dict[str, Any]]) -> Env:
    """What the service container gets: its ConfigMap, the Secret template, and any `env`."""
    env: Env = {}
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            env |= doc.get("data", {})
        if doc["kind"] in {"Deployment", "Job"}:
            for container in doc["spec"]["template"]["spec"]["containers"]:
                env |= {e["name"]: e.get("value", "") for e in container.get("env", [])}
    env |= load_yaml(SECRET_TEMPLATE)["stringData"]
    return {k: v for k, v in env.items() if k.startswith(PREFIX)}


def _check(where: str, env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    known = {PREFIX + name.upper() for name in Settings.model_fields}
    unknown = set(env) - known
    assert not unknown, f"{where} sets variables Settings does not know: {sorted(unknown)}"
    missing = {PREFIX + name.upper() for name in required_settings()} - set(env)
    assert not missing, f"{where} does not set {sorted(missing)}"
    for name in list(os.environ):
        if name.startswith(PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir("/")  # no developer's .env
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        load_settings()
    except SettingsError as exc:
        pytest.fail(f"{where}: {exc}")


def test_compose_sets_known_and_required_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    environments = compose_environments()
    assert {"service", "migrate", "topics", "demo-setup"} <= set(environments)
    for name, env in environments.items():
        with monkeypatch.context() as patch:
            _check(f"docker-compose service {name!r}", env, patch)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_manifests_set_known_and_required_settings(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = manifest_environment(rendered[overlay])
    # The template's encryption key is a placeholder; Settings only checks that it is there.
    _check(f"k8s overlay {overlay!r}", env, monkeypatch)


def test_a_misspelt_variable_would_be_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"WEBHOOKS_DATABSE_URL": "postgresql://x@y/z"}
    with pytest.raises(AssertionError, match="DATABSE"):
        _check("example", env, monkeypatch)
