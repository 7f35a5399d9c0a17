"""The API's cursors: what it hands out it takes back; anything else is refused."""

from __future__ import annotations

import pytest

from service import ids
from service.api.paging import decode_cursor, encode_cursor


def test_a_cursor_round_trips() -> None:
    last = ids.new_id(ids.SUBSCRIPTION)
    assert decode_cursor(encode_cursor(last)) == last


def test_foreign_cursors_are_refused() -> None:
    for cursor in ("!!!", "Zm9v", "", encode_cursor("whd_01JD2Y8Q0S6M2X0YV1X4J5T7ZK")):
        with pytest.raises(ValueError, match="cursor"):
            decode_cursor(cursor)
