"""Content filters (service/filters.py): the compiled closures agree with the reference evaluator
of tests/support/filters.py on random filters and events of every type; `explain` names a
clause exactly when the filter refuses; the dialect's rules one by one; every limit refused
with the place named, hostile documents in bounded work."""

from __future__ import annotations

import sys
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain import Subscription
from service.filters import (
    MAX_BYTES,
    MAX_DEPTH,
    MAX_IN,
    MAX_NUMBER,
    MAX_OPERATORS,
    FilterError,
    compile_filter,
)
from service.matching import SubscriptionIndex
from service.store import ChangedSubscriptions, Pipeline
from tests.support.filters import FILTERS, events, reference_matches
from tests.support.strategies import JSON

pytestmark = pytest.mark.unit

SCORE_EVENT: dict[str, Any] = {
    "id": "evt_1",
    "event": "verification.created",
    "occurredAt": "2026-05-24T08:15:12.481Z",
    "orgId": "org_1",
    "data": {
        "verificationId": "ver_1",
        "customerId": "cus_1",
        "method": "ktp_capture",
        "status": "rejected",
        "score": 42,
        "tags": ["manual", "glare"],
    },
}


def matches(document: dict[str, Any], event: dict[str, Any] = SCORE_EVENT) -> bool:
    return compile_filter(document).matches(event)


@settings(max_examples=100, deadline=None)
@given(document=FILTERS, batch=st.lists(events("org_1"), min_size=1, max_size=8))
def test_the_compiled_filter_agrees_with_the_reference(
    document: dict[str, Any], batch: list[dict[str, Any]]
) -> None:
    compiled = compile_filter(document)
    for event in batch:
        expected = reference_matches(document, event)
        assert compiled.matches(event) is expected, (document, event)
        refusal = compiled.explain(event)
        assert (refusal is None) is expected, (document, event, refusal)


@settings(max_examples=60, deadline=None)
@given(document=FILTERS, value=JSON)
def test_any_value_anywhere_is_judged_never_an_error(document: dict[str, Any], value: Any) -> None:
    compiled = compile_filter(document)
    envelope = {"event": value, "occurredAt": value, "orgId": value, "data": {"score": value}}
    for target in (value, envelope, {"data": value}):
        assert compiled.matches(target) is reference_matches(document, target)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"data": {"status": "rejected"}}, True),
        ({"data": {"status": {"$in": ["rejected", "requires_review"]}}}, True),
        ({"data": {"status": {"$nin": ["rejected", "requires_review"]}}}, False),
        ({"data": {"score": {"$lt": 60}}}, True),
        ({"data": {"score": {"$gte": 40, "$lt": 42}}}, False),
        ({"data": {"score": 42.0}}, True),  # a number is a number: 42 equals 42.0
        ({"data": {"score": "42"}}, False),  # a string is not a number
        ({"data": {"score": {"$gt": "2026-01-01T00:00:00Z"}}}, False),  # not a timestamp
        ({"data": {"status": {"$lt": 60}}}, False),  # wrong type: a non-match
        ({"data": {"tags": "glare"}}, True),  # a list holds it
        ({"data": {"tags": {"$in": ["x", "manual"]}}}, True),
        ({"data": {"missing": {"$exist": False}}}, True),
        ({"data": {"missing": {"$neq": "x"}}}, True),  # absent is not equal
        ({"data": {"missing": {"$nin": ["x"]}}}, True),
        ({"data": {"missing": None}}, False),  # absent is not null
        ({"data": {"score": {"$exist": True}}}, True),
        ({"occurredAt": {"$gte": "2026-05-24T15:15:12+07:00"}}, True),  # instants, not text
        ({"occurredAt": {"$lt": "2026-05-24T08:15:12.482Z"}}, True),
        ({"event": "verification.created", "orgId": "org_1"}, True),
        ({"$or": [{"event": "review.overridden"}, {"data": {"method": "ktp_capture"}}]}, True),
        ({"$not": {"data": {"method": "ktp_capture"}}}, False),
        ({"data": {"$or": [{"status": "verified"}, {"score": {"$lte": 42}}]}}, True),
        ({"$and": [{"data": {"status": "rejected"}}, {"data": {"score": {"$gt": 42}}}]}, False),
    ],
)
def test_the_dialect(document: dict[str, Any], expected: bool) -> None:
    assert matches(document) is expected
    assert reference_matches(document, SCORE_EVENT) is expected


def test_true_is_not_one() -> None:
    event = {"data": {"flag": True, "count": 1}}
    assert matches({"data": {"flag": True}}, event)
    assert not matches({"data": {"flag": 1}}, event)
    assert not matches({"data": {"count": True}}, event)
    assert not matches({"data": {"count": {"$in": [True]}}}, event)
    assert not matches({"data": {"flag": {"$gt": 0}}}, event)


def test_explain_names_the_clause_that_refused() -> None:
    compiled = compile_filter(
        {"data": {"status": {"$in": ["rejected"]}, "score": {"$lt": 40}}, "event": {"$exist": True}}
    )
    refusal = compiled.explain(SCORE_EVENT)
    assert refusal is not None
    assert refusal.clause == "data.score.$lt"
    assert refusal.reason == "the value is not below the operand"
    no_score = {**SCORE_EVENT, "data": {**SCORE_EVENT["data"], "score": None}}
    refusal = compiled.explain(no_score)
    assert refusal is not None
    assert (refusal.clause, refusal.reason) == (
        "data.score.$lt",
        "the value is not a number, which $lt compares here",
    )
    refusal = compile_filter({"$or": [{"data": {"x": 1}}, {"event": "x"}]}).explain(SCORE_EVENT)
    assert refusal is not None
    assert (refusal.clause, refusal.reason) == ("$or", "none of its 2 filters matches")
    refusal = compile_filter({"data": {"a": {"b": 1}}}).explain(SCORE_EVENT)
    assert refusal is not None
    assert (refusal.clause, refusal.reason) == ("data.a.b", "the field is absent")


def _nested(levels: int) -> dict[str, Any]:
    document: dict[str, Any] = {"deep": 1}
    for _ in range(levels):
        document = {"a": document}
    return {"data": document}


@pytest.mark.parametrize(
    ("document", "place", "message"),
    [
        ([], "", "must be a JSON object"),
        ({}, "", "an empty object tests nothing"),
        ({"status": "rejected"}, "status", "a filter reads event, occurredAt, orgId and data"),
        ({"$and": [{"id": "evt_1"}]}, "$and[0].id", "a filter reads event"),
        ({"data": {"x": {"$regex": "a"}}}, "data.x.$regex", "unknown operator"),
        ({"data": {"$where": "1"}}, "data.$where", "unknown operator"),
        ({"$lt": 5}, "$lt", "$lt applies to a field"),
        ({"$and": [{"$in": [1]}]}, "$and[0].$in", "$in applies to a field"),
        ({"data": {"x": {"$lt": 5, "y": 1}}}, "data.x.y", "operators and fields cannot be mixed"),
        ({"data": {"x": {"$lt": 5, "$or": [{}]}}}, "data.x.$or", "$or takes filters"),
        ({"data": {"x": [1, 2]}}, "data.x", "a list is not a value to match: use $in"),
        ({"data": {"x": {"$in": []}}}, "data.x.$in", "takes a list of at least one value"),
        ({"data": {"x": {"$in": "abc"}}}, "data.x.$in", "takes a list of at least one value"),
        ({"data": {"x": {"$in": [[1]]}}}, "data.x.$in[0]", "takes a string, a number"),
        ({"data": {"x": {"$in": list(range(MAX_IN + 1))}}}, "data.x.$in", f"at most {MAX_IN}"),
        ({"data": {"x": MAX_NUMBER + 1}}, "data.x", "a number must be within"),
        ({"data": {"x": {"$gt": -1e300}}}, "data.x.$gt", "a number must be within"),
        ({"data": {"x": {"$gt": "soon"}}}, "data.x.$gt", "takes a number or an RFC 3339"),
        ({"data": {"x": {"$gt": True}}}, "data.x.$gt", "takes a number or an RFC 3339"),
        ({"data": {"x": {"$exist": 1}}}, "data.x.$exist", "takes true or false"),
        ({"data": {"x": {"$eq": {"a": 1}}}}, "data.x.$eq", "takes a string, a number"),
        ({"$or": []}, "$or", "takes a list of at least one filter"),
        ({"$or": [1]}, "$or[0]", "must be a filter"),
        ({"$not": [{"event": "x"}]}, "$not", "takes a filter"),
        ({"data": {"": 1}}, "data", "a field name must be 1 to 100"),
        ({"data": {"x" * 101: 1}}, "data", "a field name must be 1 to 100"),
        (_nested(MAX_DEPTH), "data" + ".a" * (MAX_DEPTH - 1), f"deeper than {MAX_DEPTH}"),
        (
            {"data": {f"f{i}": i for i in range(MAX_OPERATORS + 1)}},
            f"data.f{MAX_OPERATORS}",
            f"more than {MAX_OPERATORS} operators",
        ),
        ({"data": {"x": {"$in": ["y" * 40] * MAX_IN}}}, "", f"at most {MAX_BYTES}"),
    ],
)
def test_limits_and_mistakes_are_refused_with_their_place(
    document: Any, place: str, message: str
) -> None:
    with pytest.raises(FilterError) as refused:
        compile_filter(document)
    assert refused.value.place == place
    assert message in refused.value.message


def test_a_filter_at_the_limits_is_taken() -> None:
    compile_filter(_nested(MAX_DEPTH - 3))
    compile_filter({"data": {"x": {"$in": list(range(MAX_IN))}, "y": MAX_NUMBER}})
    compile_filter({"data": {f"f{i}": i for i in range(MAX_OPERATORS)}})


@pytest.mark.parametrize(
    "document",
    [
        _nested(900),  # as deep as a request body can be parsed
        {"data": {f"f{i}": {"a": {"b": 1}} for i in range(100_000)}},
        {"data": {"x": {"$in": list(range(300_000))}}},
        {"$or": [{"data": {"x": i}} for i in range(100_000)]},
        {"data": {"x": 1e308}},
    ],
)
def test_hostile_documents_are_refused_in_bounded_work(document: dict[str, Any]) -> None:
    """Each is refused at the first place over a limit: far sooner than a walk of it all.
    Counted in function calls (Python's and C's), which do not move with the machine's load
    as a time does; each document is 100,000 parts or more, or one number out of range."""
    calls = 0

    def count(_frame: Any, event: str, _arg: Any) -> None:
        nonlocal calls
        calls += event in ("call", "c_call")

    sys.setprofile(count)
    try:
        with pytest.raises(FilterError):
            compile_filter(document)
    finally:
        sys.setprofile(None)
    assert calls < 20_000, calls


class _ChangingStore:
    """What the index reads of a store: a revision, and the rows changed since a stamp."""

    def __init__(self) -> None:
        self.revision = 0
        self.live: list[Subscription] = []

    async def subscriptions_revision(self) -> int:
        return self.revision

    async def changed_subscriptions(self, after: int) -> ChangedSubscriptions:
        return ChangedSubscriptions(self.live, [], self.revision)

    def change(self, *subscriptions: Subscription) -> None:
        self.revision += 1
        self.live = list(subscriptions)


def _subscription(subscription_id: str, content_filter: str | None) -> Subscription:
    return Subscription(
        subscription_id,
        "org_1",
        "https://x.example/",
        ("verification.created",),
        None,
        True,
        None,
        0,
        0,
        None,
        "qe_whsec_x",
        filter=content_filter,
    )


async def test_the_index_compiles_a_filter_when_its_subscription_changes() -> None:
    store = _ChangingStore()
    index = SubscriptionIndex(cast(Pipeline, store))
    low = '{"data":{"score":{"$lt":60}}}'
    # A stored filter this version refuses (the top level reads no `status`): every event.
    store.change(
        _subscription("whk_low", low),
        _subscription("whk_all", None),
        _subscription("whk_odd", '{"status":"rejected"}'),
    )
    await index.refresh(force=True)
    matched = index.match("org_1", "verification.created", 1, SCORE_EVENT)
    assert ({s.id for s in matched.wanted}, matched.filtered) == (
        {"whk_low", "whk_all", "whk_odd"},
        0,
    )
    high = {**SCORE_EVENT, "data": {**SCORE_EVENT["data"], "score": 61}}
    matched = index.match("org_1", "verification.created", 1, high)
    assert ({s.id for s in matched.wanted}, matched.filtered) == ({"whk_all", "whk_odd"}, 1)
    # A change replaces the compiled filter; a filter taken away takes everything.
    store.change(_subscription("whk_low", None))
    assert await index.refresh() is True
    matched = index.match("org_1", "verification.created", 1, high)
    assert ({s.id for s in matched.wanted}, matched.filtered) == (
        {"whk_low", "whk_all", "whk_odd"},
        0,
    )
