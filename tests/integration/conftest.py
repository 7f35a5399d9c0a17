"""Fixtures the integration tests share beyond tests/conftest.py's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.settings import Settings
from tests.support.live import LiveApp, live_app
from tests.support.pipeline import pipeline_factory
from tools.receiver import Receiver

__all__ = ["pipeline_factory"]  # the fixture of tests/support/pipeline.py, registered here


@pytest.fixture
async def live(
    settings_for: Settings, topics: list[str], kafka_bootstrap: str, receiver: Receiver
) -> AsyncIterator[LiveApp]:
    """The whole service in this process (API, consumer, dispatcher) on each store, with an
    API key, delivering to the shared receiver."""
    async with live_app(settings_for, topics, kafka_bootstrap, receiver) as app:
        yield app
