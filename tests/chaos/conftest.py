"""Fixtures of the fault suite: an in-process receiver that notes every request, and the whole
service as the pipeline tests run it (real Kafka, both stores)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from deploy.local.receiver import Receiver, start_receiver
from tests.integration.test_pipeline import pipeline_factory

__all__ = ["pipeline_factory", "receiver"]  # the pipeline fixture, shared rather than written twice


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async for r in start_receiver():
        yield r
