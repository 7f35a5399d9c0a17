"""The fault suite runs the whole service as the pipeline tests do: real Kafka, both stores."""

from __future__ import annotations

from tests.integration.test_pipeline import pipeline_factory

__all__ = ["pipeline_factory"]  # the fixture, shared rather than written twice
