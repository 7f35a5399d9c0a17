"""Session fixtures for the deploy checks: each overlay rendered once by kustomize."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.deploy import OVERLAYS, REPO, run, tool, yaml_documents


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """`kustomize build k8s/overlays/<overlay>` for every overlay, as parsed documents."""
    kustomize = tool("kustomize")
    return {
        overlay: yaml_documents(run(kustomize, "build", str(REPO / "k8s" / "overlays" / overlay)))
        for overlay in OVERLAYS
    }
