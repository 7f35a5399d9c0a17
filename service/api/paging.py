"""Cursor paging for the API's lists: a cursor is the last position of a page, made opaque. The
store pages by position (`Page.next_after`); what a position looks like is `service.ids`' (one
grammar for ids and positions); only the API knows what a cursor looks like."""

from __future__ import annotations

import base64
import binascii
import re

from service.ids import SUBSCRIPTION_POSITION


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, shape: re.Pattern[str] = SUBSCRIPTION_POSITION) -> str:
    """The position a cursor points after; ValueError for anything this service did not hand
    out (`shape`: what a position of this listing looks like)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a cursor this API returned") from None
    if not shape.fullmatch(raw):
        raise ValueError("not a cursor this API returned")
    return raw
