"""The Dockerfile passes hadolint and builds the image the issue describes (read from its
instructions: CI has no Docker daemon); the compose file is valid against the compose
specification's schema (check-jsonschema ships it) and every file, stage and service it names
exists."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from tests.support.deploy import REPO, load_yaml, run, tool

DOCKERFILE = REPO / "deploy" / "Dockerfile"
COMPOSE = REPO / "deploy" / "docker-compose.yml"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def stages() -> list[Stage]:
    """The Dockerfile's stages, each with its instructions (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            found.append(Stage(name.strip(), base.strip()))
        elif found:
            found[-1].instructions.append((keyword, rest.strip()))
    return found


def test_hadolint_passes() -> None:
    run(tool("hadolint"), "--no-color", str(DOCKERFILE))


def test_the_final_image_is_the_service_alone() -> None:
    *builders, final = stages()
    assert final.name == "service"
    assert [json.loads(e) for e in final.args("ENTRYPOINT")] == [["identity-webhooks"]]
    assert [json.loads(c) for c in final.args("CMD")] == [["serve"]]
    (user,) = final.args("USER")
    assert user.split(":")[0] not in {"0", "root"}
    (healthcheck,) = final.args("HEALTHCHECK")
    assert "/healthz" in healthcheck
    # Only the built virtualenv comes in: no sources, tests, demo receiver or build tools.
    copies = final.args("COPY")
    assert copies
    assert all(c.startswith("--from=build ") for c in copies), copies
    runs = " ".join(final.args("RUN"))
    assert "apt-get install" not in runs
    assert "pip install" not in runs
    assert "pip uninstall" in runs  # not even pip
    build = next(s for s in builders if s.name == "build")
    assert {c.split()[0] for c in build.args("COPY")} == {"pyproject.toml", "service"}
    # The demo's tools come only into the demo stage, from tools/.
    demo = next(s for s in builders if s.name == "demo")
    assert all(c.startswith("tools/") for c in demo.args("COPY"))


def test_the_version_label_is_the_package_version() -> None:
    final = stages()[-1]
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert f"VERSION={version}" in final.args("ARG")
    labels = " ".join(final.args("LABEL"))
    assert 'org.opencontainers.image.version="${VERSION}"' in labels


def test_compose_matches_the_compose_specification() -> None:
    run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE))


def _services() -> dict[str, Any]:
    services: dict[str, Any] = load_yaml(COMPOSE)["services"]
    return services


def test_compose_names_only_what_exists() -> None:
    services = _services()
    stage_names = {s.name for s in stages()}
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        build = service.get("build")
        if build:
            context = (COMPOSE.parent / build["context"]).resolve()
            assert (context / build["dockerfile"]).resolve() == DOCKERFILE
            assert build["target"] in stage_names
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name} mounts missing {source}"


def test_compose_runs_the_whole_path() -> None:
    services = _services()
    assert {"kafka", "postgres", "migrate", "service", "receiver", "prometheus", "grafana"} <= set(
        services
    )
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert services["service"]["build"]["target"] == "service"
    assert services["service"]["command"] == ["serve"]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["service"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["receiver"]["build"]["target"] == "demo"  # not the service image
    mounts = " ".join(services["prometheus"]["volumes"])
    assert "alerts.yml:/etc/prometheus/alerts.yml" in mounts
    prometheus = load_yaml(REPO / "deploy" / "prometheus" / "prometheus.yml")
    assert prometheus["rule_files"] == ["/etc/prometheus/alerts.yml"]
    assert "grafana/dashboard.json" in " ".join(services["grafana"]["volumes"])


def test_the_scripts_parse() -> None:
    run("sh", "-n", str(REPO / "deploy" / "compose" / "demo-setup.sh"))
    run("bash", "-n", str(REPO / "deploy" / "local" / "tools.sh"))


def test_nothing_points_at_the_old_image_path() -> None:
    assert not (REPO / "deploy" / "docker").exists()
    for path in [
        REPO / "README.md",
        REPO / "Makefile",
        *(REPO / "docs").rglob("*.md"),
        *(REPO / "deploy").rglob("*"),
    ]:
        if path.is_file() and path.suffix not in {".json"}:
            assert "deploy/docker/" not in path.read_text(errors="replace"), path
