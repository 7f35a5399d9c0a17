"""Prefixed ULID identifiers, and the positions listings page by: one grammar for both, checked
here before any store lookup, so hostile input never reaches a query as an id or a position.

An id is `<prefix>_<ULID>`, sortable by creation time and unique without coordination. A
listing of subscriptions pages after an id; the delivery log, newest first, after
`<createdAt ms>.<delivery id>`. The API makes positions opaque (`service.api.paging`)."""

from __future__ import annotations

import functools
import re

from ulid import ULID

SUBSCRIPTION = "whk"
DELIVERY = "whd"
EVENT = "evt"
API_KEY = "key"
ERASURE = "ers"

_ULID = "[0-9A-HJKMNP-TV-Z]{26}"  # Crockford's base 32, upper case, as `ULID` writes it


def new_id(prefix: str) -> str:
    """`<prefix>_<ULID>`, e.g. `whk_01JD2Y8Q0S6M2X0YV1X4J5T7ZK`."""
    return f"{prefix}_{ULID()}"


@functools.cache
def shape(prefix: str) -> re.Pattern[str]:
    """What an id `new_id(prefix)` makes looks like (use with `fullmatch`)."""
    return re.compile(rf"{re.escape(prefix)}_{_ULID}")


def looks_like(text: str, prefix: str) -> bool:
    """True when `text` has the shape of an id `new_id(prefix)` makes."""
    return shape(prefix).fullmatch(text) is not None


SUBSCRIPTION_POSITION = shape(SUBSCRIPTION)
"""A listing of subscriptions' position: the last id of a page."""
LOG_POSITION = re.compile(rf"[0-9]{{1,15}}\.{shape(DELIVERY).pattern}")
"""The delivery log's position: `<createdAt ms>.<delivery id>` (newest first)."""


def log_position(created_at: int, delivery_id: str) -> str:
    """The position of a delivery in its subscription's log."""
    return f"{created_at}.{delivery_id}"


def parse_log_position(position: str) -> tuple[int, str]:
    """(createdAt ms, delivery id) of a log position; ValueError when it is not one."""
    if LOG_POSITION.fullmatch(position) is None:
        raise ValueError("not a position this listing gave out")
    created, _, delivery_id = position.partition(".")
    return int(created), delivery_id


FEED_POSITION = re.compile(r"[0-9]{1,18}\.[0-9]{1,15}")
"""A polling subscription's feed position: `<place>.<when it was handed out, ms>`."""


def feed_position(place: int, issued_at: int) -> str:
    """The position after `place` in a feed, handed out at `issued_at` (epoch ms)."""
    return f"{place}.{issued_at}"


def parse_feed_position(position: str) -> tuple[int, int]:
    """(place, issued at ms) of a feed position; ValueError when it is not one."""
    if FEED_POSITION.fullmatch(position) is None:
        raise ValueError("not a position this feed gave out")
    place, _, issued = position.partition(".")
    return int(place), int(issued)
