"""Cursor paging for the API's lists: a cursor is the last id of a page, made opaque. The store
pages by id (`Page.next_after`); only the API knows what a cursor looks like."""

from __future__ import annotations

import base64
import binascii
import re

from service import ids

_CURSOR_ID = re.compile(rf"^{ids.SUBSCRIPTION}_[0-9A-Z]{{26}}$")


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The id a cursor points after; ValueError for anything this service did not hand out."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a cursor this API returned") from None
    if not _CURSOR_ID.match(raw):
        raise ValueError("not a cursor this API returned")
    return raw
