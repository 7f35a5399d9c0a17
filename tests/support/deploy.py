"""What the deploy checks share: where the repository and its tools are, running a tool, and
pulling metric names out of PromQL.

The command-line tools come from `deploy/local/tools.sh` (kustomize, promtool; `make test` runs
it first) and from the virtualenv's `dev` extra (check-jsonschema, hadolint). A missing tool
fails the test that needs it: these checks are never skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / ".cache" / "tools" / "bin"
VENV_BIN = Path(sys.executable).parent
OVERLAYS = ("staging", "production")


def tool(name: str) -> str:
    """The path of a checker: the project's tool directory, the virtualenv, then PATH."""
    for folder in (TOOLS, VENV_BIN):
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is not installed: run `make tools` (deploy/local/tools.sh) or `make setup`"
        )
    return found


def run(*command: str, cwd: Path = REPO) -> str:
    """Runs a checker and returns its standard output; a non-zero exit fails the test with
    everything it printed."""
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}",
            pytrace=False,
        )
    return done.stdout


def yaml_documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# PromQL words that look like metric names but are not.
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "inf", "nan",
}  # fmt: skip
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads: every identifier that is not a function call, a
    keyword, a label in a matcher or grouping clause, a string, a duration or a variable."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = _GROUPING.sub("", text)
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables
    text = re.sub(r"\boffset\s+\w+", "", text)
    return {name for name in _NAME.findall(text) if name.lower() not in _KEYWORDS}


RULES = REPO / "deploy" / "prometheus" / "alerts.yml"

DASHBOARD = REPO / "deploy" / "grafana" / "dashboard.json"


def alerts() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and template variable queries."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                found.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(DASHBOARD.read_text()))
    return found
