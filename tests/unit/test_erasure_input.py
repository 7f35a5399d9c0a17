"""What an erasure takes for a customer id: any text an event's `data.customerId` can hold, up to
200 characters, and nothing else; said as the API's field errors, all at once."""

from __future__ import annotations

import pytest

from service.operations.erasure import customer_id_errors


@pytest.mark.parametrize(
    "customer",
    ["c", "c" * 200, "cus/ø ✓", " ", "../x", "' OR 1=1 --", "\u2028", "\u202eevil", "🙂"],
)
def test_any_text_up_to_200_characters_is_an_id(customer: str) -> None:
    assert customer_id_errors(customer) == []


@pytest.mark.parametrize(
    ("customer", "messages"),
    [
        ("", ["must not be empty"]),
        ("c" * 201, ["must be at most 200 characters"]),
        ("🙂" * 201, ["must be at most 200 characters"]),  # characters, not bytes
        ("a\x00", ["must not hold control characters"]),
        ("a\tb", ["must not hold control characters"]),
        ("a\x9fb", ["must not hold control characters"]),
        ("a\udc80", ["must be valid Unicode text"]),  # an undecodable byte of argv
        ("\x01" * 201, ["must be at most 200 characters", "must not hold control characters"]),
    ],
)
def test_what_cannot_be_an_id_is_said_in_full(customer: str, messages: list[str]) -> None:
    assert customer_id_errors(customer) == [("customerId", m) for m in messages]
