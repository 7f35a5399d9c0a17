"""Prefixed ULID identifiers: sortable by creation time, unique without coordination."""

from __future__ import annotations

from ulid import ULID

SUBSCRIPTION = "whk"
DELIVERY = "whd"
EVENT = "evt"
API_KEY = "key"


def new_id(prefix: str) -> str:
    """`<prefix>_<ULID>`, e.g. `whk_01JD2Y8Q0S6M2X0YV1X4J5T7ZK`."""
    return f"{prefix}_{ULID()}"
