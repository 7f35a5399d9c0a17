"""identity-webhooks: Identity Platform domain events from Kafka, delivered as signed webhooks."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("identity-webhooks")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"
