"""Cursor paging for the API's lists: a cursor is the last position of a page, made opaque. The
store pages by position (`Page.next_after`); what a position looks like is `service.ids`' (one
grammar for ids and positions); only the API knows what a cursor looks like."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping

from service.ids import SUBSCRIPTION_POSITION

DEFAULT_LIMIT = 50
MAX_LIMIT = 100


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


def page_limit(query: Mapping[str, str], errors: list[tuple[str, str]]) -> int:
    """A listing's `limit` (default DEFAULT_LIMIT); a bad one is added to `errors`."""
    if "limit" not in query:
        return DEFAULT_LIMIT
    text = query["limit"]
    # The length check comes first: int() of a 4,301-digit string raises ValueError.
    if (
        not (text.isascii() and text.isdigit() and len(text) <= len(str(MAX_LIMIT)))
        or not 1 <= int(text) <= MAX_LIMIT
    ):
        errors.append(("limit", f"must be a whole number from 1 to {MAX_LIMIT}"))
        return DEFAULT_LIMIT
    return int(text)
