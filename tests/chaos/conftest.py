"""The fault suite runs the whole service as the pipeline tests do (real Kafka, both stores); the
receiver fixture is the suite-wide one of tests/conftest.py."""

from __future__ import annotations

from tests.support.pipeline import pipeline_factory

__all__ = ["pipeline_factory"]  # the fixture of tests/support/pipeline.py, registered here
