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


_CROCKFORD = frozenset("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def looks_like(text: str, prefix: str) -> bool:
    """True when `text` has the shape of an id `new_id(prefix)` makes (checked before any
    store lookup, so hostile input never reaches a query as an id)."""
    head, sep, tail = text.partition("_")
    return bool(sep) and head == prefix and len(tail) == 26 and set(tail) <= _CROCKFORD
