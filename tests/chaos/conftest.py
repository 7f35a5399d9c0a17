"""Fixtures of the fault suite: an in-process receiver that notes every request."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from deploy.local.receiver import Receiver, start_receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async for r in start_receiver():
        yield r
