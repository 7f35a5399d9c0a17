"""Content filters for the property tests: strategies that draw catalog events and filters over
the same small value pools (so that filters match some events and refuse others), and a
reference evaluator written apart from service/filters.py, straight from docs/api.md's rules,
that the compiled filters are compared with."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from hypothesis import strategies as st

from service import ids

STATUSES = ("verified", "rejected", "requires_review", "pending")
METHODS = ("ktp_capture", "face_match", "nik_format", "dukcapil")
LEVELS = ("none", "basic", "standard", "premium")
CUSTOMERS = ("cus_1", "cus_2", "cus_3")
# Occurred after any subscription a test makes, in several spellings of close instants.
OCCURRED = (
    "2031-01-01T00:00:00Z",
    "2031-01-01T00:00:00.500Z",
    "2031-01-01T07:00:01+07:00",
    "2031-01-01T00:00:02.25Z",
)
TIMES = (
    "2026-01-01T00:00:00Z",
    "2027-05-24T08:17:58.491Z",
    "2027-05-24T15:17:58.491+07:00",
    "2027-05-24T08:17:58Z",
    "2031-01-01T00:00:01Z",
    "2030-12-31T23:00:00.5-01:00",
)
WORDS = (*STATUSES, *METHODS, *LEVELS, *CUSTOMERS, "60", "true", "")

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-5, 105)
    | st.floats(-5, 105, allow_nan=False).map(lambda f: round(f, 2))
    | st.sampled_from(WORDS)
    | st.sampled_from(TIMES)
)
# An extra data field of any type, lists included (the dialect's array match).
MIXED = SCALARS | st.lists(SCALARS, max_size=3) | st.fixed_dictionaries({"deep": SCALARS})


def _maybe_extra(data: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        data, optional={"extra": MIXED, "tags": st.lists(st.sampled_from(WORDS), max_size=3)}
    )


_DATA = {
    "verification.created": _maybe_extra(
        {
            "verificationId": st.just("ver_1"),
            "customerId": st.sampled_from(CUSTOMERS),
            "method": st.sampled_from(METHODS),
            "status": st.sampled_from(STATUSES),
            "score": st.none()
            | st.integers(0, 100)
            | st.floats(0, 100, allow_nan=False).map(lambda f: round(f, 1)),
        }
    ),
    "customer.kyc_updated": _maybe_extra(
        {
            "customerId": st.sampled_from(CUSTOMERS),
            "kycLevel": st.sampled_from(LEVELS),
            "kycLastVerifiedAt": st.none() | st.sampled_from(TIMES),
            "kycExpiresAt": st.none() | st.sampled_from(TIMES),
        }
    ),
    "review.overridden": _maybe_extra(
        {
            "verificationId": st.just("ver_1"),
            "customerId": st.sampled_from(CUSTOMERS),
            "actorUserId": st.just("usr_1"),
            "fromStatus": st.sampled_from(STATUSES),
            "toStatus": st.sampled_from(STATUSES),
            "reason": st.none() | st.sampled_from(("", "glare")),
        }
    ),
}


def events(org: str) -> st.SearchStrategy[dict[str, Any]]:
    """Catalog envelopes of `org`, of every type, with fresh ids."""
    return st.sampled_from(sorted(_DATA)).flatmap(
        lambda name: st.builds(
            lambda data, occurred: {
                "id": ids.new_id("evt"),
                "event": name,
                "occurredAt": occurred,
                "orgId": org,
                "data": data,
            },
            _DATA[name],
            st.sampled_from(OCCURRED),
        )
    )


_PATHS = (
    ("event",),
    ("orgId",),
    ("occurredAt",),
    ("data", "status"),
    ("data", "score"),
    ("data", "method"),
    ("data", "kycLevel"),
    ("data", "kycExpiresAt"),
    ("data", "customerId"),
    ("data", "toStatus"),
    ("data", "reason"),
    ("data", "extra"),
    ("data", "extra", "deep"),
    ("data", "tags"),
    ("data", "missing"),
)
_EVENTS = ("verification.created", "customer.kyc_updated", "review.overridden")
_OPERAND_SCALARS = SCALARS | st.sampled_from(_EVENTS)
_ORDERED = (
    st.integers(-5, 105)
    | st.floats(-5, 105, allow_nan=False).map(lambda f: round(f, 1))
    | st.sampled_from(TIMES + OCCURRED)
)


def _condition() -> st.SearchStrategy[Any]:
    return st.one_of(
        _OPERAND_SCALARS,  # a plain value: equality
        st.fixed_dictionaries(
            {}, optional={"$eq": _OPERAND_SCALARS, "$neq": _OPERAND_SCALARS}
        ).filter(bool),
        st.sampled_from(("$in", "$nin")).flatmap(
            lambda op: st.lists(_OPERAND_SCALARS, min_size=1, max_size=4).map(lambda v: {op: v})
        ),
        st.fixed_dictionaries(
            {}, optional=dict.fromkeys(("$gt", "$gte", "$lt", "$lte"), _ORDERED)
        ).filter(bool),
        st.booleans().map(lambda b: {"$exist": b}),
    )


def _nest(path: tuple[str, ...], condition: Any) -> dict[str, Any]:
    for name in reversed(path):
        condition = {name: condition}
    return condition  # type: ignore[no-any-return]


LEAVES = st.builds(_nest, st.sampled_from(_PATHS), _condition())


def _merged(filters: list[dict[str, Any]]) -> dict[str, Any]:
    """Several filters as one object where their names do not collide (the implicit AND),
    else as $and."""
    merged: dict[str, Any] = {}
    for one in filters:
        for name, value in one.items():
            if name in merged:
                return {"$and": filters}
            merged[name] = value
    return merged


def depth(value: Any) -> int:
    """JSON nesting: a scalar 0, an object or a list one more than what it holds."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


FILTERS: st.SearchStrategy[dict[str, Any]] = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda fs: {"$and": fs}),
        st.lists(inner, min_size=1, max_size=3).map(lambda fs: {"$or": fs}),
        inner.map(lambda f: {"$not": f}),
        st.lists(inner, min_size=2, max_size=3).map(_merged),
    ),
    max_leaves=6,
).filter(lambda f: depth(f) <= 12)
"""Valid filters over the envelope's fields and the events' data (within the depth limit)."""


# -- the reference ---------------------------------------------------------------------------

_MISSING = object()
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "other"


def _same(a: Any, b: Any) -> bool:
    return _kind(a) == _kind(b) != "other" and a == b


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _holds(op: str, operand: Any, value: Any) -> bool:
    items = value if isinstance(value, list) else [value]
    if op == "$exist":
        return (value is not _MISSING) is operand
    if op == "$eq":
        return value is not _MISSING and any(_same(item, operand) for item in items)
    if op == "$neq":
        return not _holds("$eq", operand, value)
    if op == "$in":
        return value is not _MISSING and any(_same(i, o) for i in items for o in operand)
    if op == "$nin":
        return not _holds("$in", operand, value)
    if isinstance(operand, str):
        left, right = _instant(value), _instant(operand)
        if left is None or right is None:
            return False
    elif _kind(value) == "number":
        left, right = value, operand
    else:
        return False
    return {
        "$gt": left > right,
        "$gte": left >= right,
        "$lt": left < right,
        "$lte": left <= right,
    }[op]


def _condition_holds(condition: Any, value: Any) -> bool:
    if isinstance(condition, dict):
        if any(k.startswith("$") and k not in ("$and", "$or", "$not") for k in condition):
            return all(_holds(op, operand, value) for op, operand in condition.items())
        return reference_matches(condition, value)
    return _holds("$eq", condition, value)


def reference_matches(document: dict[str, Any], value: Any) -> bool:
    """Whether `document` matches `value` (an envelope at the top), by docs/api.md's rules."""
    for name, condition in document.items():
        if name == "$and":
            ok = all(reference_matches(f, value) for f in condition)
        elif name == "$or":
            ok = any(reference_matches(f, value) for f in condition)
        elif name == "$not":
            ok = not reference_matches(condition, value)
        else:
            field = value[name] if isinstance(value, dict) and name in value else _MISSING
            ok = _condition_holds(condition, field)
        if not ok:
            return False
    return True
