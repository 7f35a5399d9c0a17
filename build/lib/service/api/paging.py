"""Cursor paging for the API's lists: a cursor is the last position of a page, made opaque. The
store pages by position (`Page.next_after`: an id, or for the delivery log `<ms>.<id>`); only
the API knows what a cursor looks like."""

from __future__ import annotations

import base64
import binascii
import re

from service import ids

SUBSCRIPTION_POSITION = re.compile(rf"^{ids.SUBSCRIPTION}_[0-9A-Z]{{26}}$")
# Crockford's base 32, as `ids.looks_like` and the store's `log_position` take it: a position
# with I, L, O or U would pass here and fail in the store, a 500 instead of a 422.
LOG_POSITION = re.compile(rf"^[0-9]{{1,15}}\.{ids.DELIVERY}_[0-9A-HJKMNP-TV-Z]{{26}}$")
"""The delivery log's position: `<createdAt ms>.<delivery id>` (newest first)."""


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, shape: re.Pattern[str] = SUBSCRIPTION_POSITION) -> str:
    """The position a cursor points after; ValueError for anything this service did not hand
    out (`shape`: what a position of this listing looks like)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a cursor this API returned") from None
    if not shape.match(raw):
        raise ValueError("not a cursor this API returned")
    return raw
