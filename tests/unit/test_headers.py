"""The static headers' rules: which names are sensitive (write-only), what may be shown, and the
PATCH's merge patch by name with the limits on its result."""

from __future__ import annotations

import pytest

from service import headers
from service.headers import MAX_HEADER_BYTES, MAX_HEADERS, is_sensitive, merge, shown


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "authorization",
        "PROXY-AUTHORIZATION",
        "Cookie",
        "X-Api-Key",
        "x-api-key",
        "X-Auth-Token",
        "X-Access-Token",
        "X-Client-Secret",
        "X-Password",
        "X-Credentials",
        "X-Session-Id",
        "X-Partner-Signature",
        "X-Webhook-Auth",
        "ApiKey",
        "X-Session-Cookie",
    ],
)
def test_credentials_are_sensitive_in_any_case(name: str) -> None:
    assert is_sensitive(name)
    assert is_sensitive(name.swapcase())


@pytest.mark.parametrize(
    "name", ["X-Tenant", "Accept", "X-Request-Source", "X-Customer-Tenant", "X-Keep", "Kee"]
)
def test_ordinary_names_are_not(name: str) -> None:
    assert not is_sensitive(name)


def test_shown_keeps_ordinary_values_and_only_the_names_of_sensitive_ones() -> None:
    pairs = (("X-Tenant", "acme"), ("Authorization", "Bearer s3cr3t"), ("X-Api-Key", "k-1"))
    ordinary, sensitive = shown(pairs)
    assert ordinary == {"X-Tenant": "acme"}
    assert sensitive == ["Authorization", "X-Api-Key"]
    assert "s3cr3t" not in repr((ordinary, sensitive))
    assert "k-1" not in repr((ordinary, sensitive))


CURRENT = (("X-Tenant", "acme"), ("Authorization", "Bearer old"), ("X-Other", "1"))


def test_a_merge_patch_sets_replaces_removes_and_keeps_what_it_does_not_name() -> None:
    merged = merge(CURRENT, {"X-Tenant": "globex", "X-Other": None, "X-New": "n"})
    assert merged == (("X-Tenant", "globex"), ("Authorization", "Bearer old"), ("X-New", "n"))


def test_names_match_without_case_and_take_the_new_spelling_in_place() -> None:
    merged = merge(CURRENT, {"authorization": "Bearer new"})
    assert merged == (("X-Tenant", "acme"), ("authorization", "Bearer new"), ("X-Other", "1"))
    assert merge(CURRENT, {"AUTHORIZATION": None, "x-other": None}) == (("X-Tenant", "acme"),)


def test_null_removes_all_an_empty_patch_keeps_all_and_removing_the_absent_is_nothing() -> None:
    assert merge(CURRENT, None) == ()
    assert merge(CURRENT, {}) == CURRENT
    assert merge(CURRENT, {"X-Absent": None}) == CURRENT
    assert merge((), {"X-A": "b"}) == (("X-A", "b"),)


def test_the_limits_hold_for_the_merged_result() -> None:
    full = tuple((f"X-H{i}", "v") for i in range(MAX_HEADERS))
    with pytest.raises(ValueError, match="those kept included"):
        merge(full, {"X-One-More": "v"})
    # Replacing one, or removing one to add another, stays within them.
    assert len(merge(full, {"x-h0": "w"})) == MAX_HEADERS
    assert len(merge(full, {"X-H0": None, "X-One-More": "v"})) == MAX_HEADERS
    big = (("X-Big", "v" * (MAX_HEADER_BYTES - len("X-Big"))),)
    assert merge(big, {}) == big
    with pytest.raises(ValueError, match=f"over {MAX_HEADER_BYTES} bytes"):
        merge(big, {"X-A": ""})
    assert merge(big, {"X-Big": None, "X-A": ""}) == (("X-A", ""),)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"Content-Type": "text/plain"}, "set by the service"),
        ({"X-Identity-Delivery": None}, "set by the service"),
        ({"Bad Name": "x"}, "not a valid header name"),
        ({"X-A": "1", "x-a": None}, "given twice"),
        ({"X-A": "line\r\nX-B: 1"}, "visible ASCII"),
        ({f"X-H{i}": None for i in range(headers.MAX_PATCH + 1)}, "at most"),
    ],
)
def test_a_patch_is_checked_name_by_name(patch: headers.Patch, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        headers.check_patch(patch)


@pytest.mark.parametrize("value", ["s3cr3t\n", "s3cr3t\r\n", "s3\ncr3t", " s3cr3t", "s3cr3t\x00"])
def test_a_refused_value_is_named_by_its_header_never_shown(value: str) -> None:
    with pytest.raises(ValueError, match="X-Api-Key") as refused:
        headers.check({"X-Api-Key": value})
    assert "s3cr3t" not in str(refused.value)


@pytest.mark.parametrize("name", ["X-A\n", "X-A\r\n", "\nX-A"])
def test_a_line_break_is_never_part_of_a_name(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid header name"):
        headers.check({name: "v"})
