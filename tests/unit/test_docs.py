"""The documentation stays true to the code: every setting is in the configuration table of
docs/operations.md (and nothing else is), every alert's runbook_url leads to a heading in docs/,
every relative link between the documents leads to a file and heading that exist, and the
README's signature check works."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote

import yaml
from pydantic import AliasChoices, AliasPath

from service.settings import Settings
from service.signing import quantum_signature

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
OPERATIONS = DOCS / "operations.md"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
REPOSITORY_URL = "https://github.com/quantum-elixir/identity-webhooks/blob/main/"
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def github_anchor(heading: str) -> str:
    """GitHub's id for a heading: lowercase, punctuation dropped, spaces to '-'."""
    text = re.sub(r"`|\*\*|\*", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(document: Path) -> set[str]:
    text = _FENCE.sub("", document.read_text())
    return {
        github_anchor(line.lstrip("#")) for line in text.splitlines() if re.match(r"^#{1,6} ", line)
    }


def setting_env_names() -> set[str]:
    """The environment variable of each field, as pydantic-settings reads it: the alias when a
    field has one, else the prefix and the field's name."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias or field.alias
        if isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices if isinstance(choice, str))
        elif isinstance(alias, AliasPath) or alias is None:
            names.add((prefix + name).upper())
    return names


def configuration_table() -> dict[str, list[str]]:
    """The rows of the table under '## Configuration' in docs/operations.md, by variable."""
    text = OPERATIONS.read_text()
    assert "\n## Configuration\n" in text, "docs/operations.md has no '## Configuration'"
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 3 and cells[0].startswith("`"):
            variable = cells[0].strip("`")
            assert variable not in rows, f"{variable} is in the table twice"
            rows[variable] = cells[1:]
    return rows


def test_every_setting_is_in_the_configuration_table() -> None:
    table = configuration_table()
    missing = setting_env_names() - set(table)
    assert not missing, f"settings missing from docs/operations.md: {sorted(missing)}"


def test_every_row_of_the_configuration_table_is_a_setting() -> None:
    unknown = set(configuration_table()) - setting_env_names()
    assert not unknown, f"docs/operations.md lists what is not a setting: {sorted(unknown)}"


def test_every_row_has_a_default_and_a_meaning() -> None:
    for variable, (default, meaning) in configuration_table().items():
        assert default, variable
        assert meaning, variable


def test_every_runbook_url_resolves_to_a_heading_in_docs() -> None:
    rules = [
        rule
        for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert rules
    for rule in rules:
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(REPOSITORY_URL + "docs/"), url
        path, _, anchor = url.removeprefix(REPOSITORY_URL).partition("#")
        document = REPO / path
        assert document.is_file(), url
        assert anchor in anchors(document), f"{path} has no heading for #{anchor}"


def test_every_relative_link_in_the_docs_resolves() -> None:
    documents = [REPO / "README.md", REPO / "CHANGELOG.md", *sorted(DOCS.rglob("*.md"))]
    for document in documents:
        text = _FENCE.sub("", document.read_text())
        for target in _LINK.findall(text):
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, anchor = unquote(target).partition("#")
            linked = (document.parent / path).resolve() if path else document
            where = f"{document.relative_to(REPO)} links to {target}"
            assert linked.exists(), where
            if anchor and linked.suffix == ".md":
                assert anchor in anchors(linked), where


def test_github_anchor_follows_githubs_rules() -> None:
    assert github_anchor("WebhooksConsumerLagHigh") == "webhooksconsumerlaghigh"
    assert github_anchor("The day an endpoint broke: log, redeliver") == (
        "the-day-an-endpoint-broke-log-redeliver"
    )
    assert github_anchor("Rate limit and `static` headers") == "rate-limit-and-static-headers"


def test_the_readmes_signature_check_tells_genuine_from_forged() -> None:
    found = re.findall(r"^```python\n(.*?)^```$", (REPO / "README.md").read_text(), re.M | re.S)
    assert len(found) == 1, "README.md needs exactly one ```python block"
    namespace: dict[str, Any] = {}
    exec(compile(found[0], "README.md", "exec"), namespace)
    genuine = cast(Callable[[str, str, bytes], bool], namespace["genuine"])
    secret, other, body = "qe_whsec_new", "qe_whsec_old", b'{"id":"evt_1","event":"x"}'
    now = int(time.time())
    assert genuine(secret, quantum_signature([secret], body, now), body)
    assert genuine(secret, quantum_signature([other, secret], body, now), body)
    assert not genuine(secret, quantum_signature([secret], body, now), body + b" ")
    assert not genuine(secret, quantum_signature([other], body, now), body)
    assert not genuine(secret, quantum_signature([secret], body, now - 3600), body)
    assert not genuine(secret, quantum_signature([secret], body, now).split(",")[1], body)
    assert not genuine(secret, "garbage", body)
