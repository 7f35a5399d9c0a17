"""The fault suite shares the pipeline tests' way of running the whole service (real Kafka, both
stores); the receiver fixture is the suite-wide one of tests/conftest.py."""

from __future__ import annotations

from tests.integration.test_pipeline import pipeline_factory

__all__ = ["pipeline_factory"]  # the fixture, shared rather than written twice
