"""The one grammar of ids and listing positions: what `new_id` makes is taken back, what the
log hands out as a position round-trips, and anything else is refused before any query."""

from __future__ import annotations

import pytest

from service import ids
from service.api.paging import decode_cursor, encode_cursor


def test_a_new_id_has_its_prefix_shape() -> None:
    for prefix in (ids.SUBSCRIPTION, ids.DELIVERY, ids.EVENT, ids.API_KEY):
        made = ids.new_id(prefix)
        assert ids.looks_like(made, prefix)
        assert not ids.looks_like(made, "other")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "whd_",
        "whd01JD2Y8Q0S6M2X0YV1X4J5T7ZK",
        "whd_01JD2Y8Q0S6M2X0YV1X4J5T7Z",  # 25 characters
        "whd_01JD2Y8Q0S6M2X0YV1X4J5T7ZKK",  # 27
        "whd_01JD2Y8Q0S6M2X0YV1X4J5T7ZI",  # I, L, O and U are not Crockford's
        "whd_01jd2y8q0s6m2x0yv1x4j5t7zk",
        "whd_01JD2Y8Q0S6M2X0YV1X4J5T7ZK\n",
        "whd_01JD2Y8Q0S6M2X0YV1X4J5_7ZK",
    ],
)
def test_what_is_not_an_id_is_refused(text: str) -> None:
    assert not ids.looks_like(text, ids.DELIVERY)


def test_a_log_position_round_trips_through_a_cursor() -> None:
    delivery_id = ids.new_id(ids.DELIVERY)
    position = ids.log_position(1_733_000_000_000, delivery_id)
    assert ids.parse_log_position(position) == (1_733_000_000_000, delivery_id)
    assert decode_cursor(encode_cursor(position), ids.LOG_POSITION) == position


@pytest.mark.parametrize(
    "position",
    [
        "",
        "1733000000000",
        "1733000000000.",
        ".whd_01JD2Y8Q0S6M2X0YV1X4J5T7ZK",
        "-1.whd_01JD2Y8Q0S6M2X0YV1X4J5T7ZK",
        "1234567890123456.whd_01JD2Y8Q0S6M2X0YV1X4J5T7ZK",  # 16 digits
        "١٢٣.whd_01JD2Y8Q0S6M2X0YV1X4J5T7ZK",  # digits, but not ASCII ones
        "1733000000000.whk_01JD2Y8Q0S6M2X0YV1X4J5T7ZK",
        "1733000000000.whd_01JD2Y8Q0S6M2X0YV1X4J5T7ZU",
        "1733000000000.whd_01JD2Y8Q0S6M2X0YV1X4J5T7ZK\n",
    ],
)
def test_what_is_not_a_log_position_is_refused(position: str) -> None:
    with pytest.raises(ValueError, match="position"):
        ids.parse_log_position(position)
    with pytest.raises(ValueError, match="cursor"):
        decode_cursor(encode_cursor(position), ids.LOG_POSITION)
