"""Content filters: which events of its types a subscription wants, judged on the event itself
(docs/api.md, "Content filters"; docs/decisions/0009-content-filters.md).

A filter is a JSON object in the matching dialect Convoy and Outpost use: field names lead into
the event (nested objects are paths), a plain value means equality, and the operators are
`$eq $neq $in $nin $gt $gte $lt $lte $exist` on a field and `$and $or $not` on filters. It reads
the envelope's `event`, `occurredAt`, `orgId` and `data`.

`compile_filter` checks a document against the limits below, naming the place of the first
thing wrong (`FilterError`), and turns it into a `Filter`: a tree of closures that `matches` an
envelope already parsed (the dict ingest holds) without parsing or allocating anything per event
beyond a timestamp operand's comparison. A value of a type an operator does not take is a
non-match, never an error. `Filter.explain` says which clause refused an event (the filter-test
route and the console).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from service.events import parse_time

MAX_BYTES = 8 * 1024
"""The filter's compact JSON at most."""
MAX_DEPTH = 12
"""Objects and lists nested in a filter at most (the filter itself is level 1)."""
MAX_OPERATORS = 64
"""Operators and plain-value equalities in a filter at most."""
MAX_IN = 256
"""Values of one `$in` or `$nin` list at most."""
MAX_NAME = 100
"""Characters of a field name at most."""
MAX_NUMBER = 2**53 - 1
"""The largest magnitude of a number operand: beyond it a double (the dialect's number) is
no longer exact."""

ENVELOPE_FIELDS = ("event", "occurredAt", "orgId", "data")
"""What a filter reads at its top level."""
LOGICAL = ("$and", "$or", "$not")
COMPARISONS = ("$eq", "$neq", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exist")

Predicate = Callable[[Any], bool]
"""A compiled clause: true when the value at its place (the envelope at the top) passes."""


class _Absent:
    """What a path that does not resolve reads as (a field missing, or read inside a value
    that is not an object)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


class FilterError(ValueError):
    """A filter the service refuses: `place` is where in it (`data.score.$lt`, `$or[1]`; empty
    for the whole filter), `message` what is wrong there."""

    def __init__(self, place: str, message: str) -> None:
        self.place = place
        self.message = message
        super().__init__(f"{place}: {message}" if place else message)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a filter refused an event: the `clause` (its place in the filter) and a `reason`
    in fixed words (never the event's value)."""

    clause: str
    reason: str


Explain = Callable[[Any], Refusal | None]


@dataclass(frozen=True, slots=True)
class Filter:
    """A compiled filter: `matches(envelope)` on the hot path, `explain(envelope)` to show
    which clause refused it (None: it matches)."""

    matches: Predicate
    explain: Explain


def compile_filter(document: object) -> Filter:
    """The filter `document` (parsed JSON) compiled, or `FilterError` naming what is wrong.
    The work is bounded by the limits whatever the document: the walk stops at the first place
    over one."""
    if not isinstance(document, dict):
        raise FilterError("", "must be a JSON object (null: every event)")
    compiler = _Compiler()
    node = compiler.filter_object(document, "", 1, top=True)
    try:
        size = len(orjson.dumps(document))
    except orjson.JSONEncodeError:  # deeper than the encoder writes: caught above already
        raise FilterError("", f"nests deeper than {MAX_DEPTH} levels") from None
    if size > MAX_BYTES:
        raise FilterError("", f"is {size} bytes of JSON; at most {MAX_BYTES}")
    return Filter(node.test, node.explain)


def check_filter(document: object) -> None:
    """`compile_filter` for its checks alone (the API's validation)."""
    compile_filter(document)


@dataclass(frozen=True, slots=True)
class _Node:
    test: Predicate
    explain: Explain


def _join(place: str, name: str) -> str:
    return f"{place}.{name}" if place else name


class _Compiler:
    """One walk over a document: its operators counted as they are met."""

    def __init__(self) -> None:
        self.operators = 0

    def _count(self, place: str) -> None:
        self.operators += 1
        if self.operators > MAX_OPERATORS:
            raise FilterError(place, f"the filter holds more than {MAX_OPERATORS} operators")

    def filter_object(
        self, document: dict[str, Any], place: str, depth: int, *, top: bool
    ) -> _Node:
        """A filter on the value at `place`: every entry must pass (a field's condition, or a
        logical operator over filters of this same value)."""
        if depth > MAX_DEPTH:
            raise FilterError(place, f"nests deeper than {MAX_DEPTH} levels")
        if not document:
            raise FilterError(place, "an empty object tests nothing; leave it out")
        nodes = []
        for name, value in document.items():
            if name in LOGICAL:
                nodes.append(self.logical(name, value, _join(place, name), depth, top=top))
            elif name.startswith("$"):
                nodes.append(self._misplaced(name, place))
            else:
                self._name(name, place)
                if top and name not in ENVELOPE_FIELDS:
                    raise FilterError(
                        _join(place, name),
                        "a filter reads event, occurredAt, orgId and data (the event's fields "
                        "go under data)",
                    )
                nodes.append(self.field(name, value, _join(place, name), depth))
        return _all(nodes, place)

    @staticmethod
    def _misplaced(name: str, place: str) -> _Node:
        if name in COMPARISONS:
            raise FilterError(
                _join(place, name), f'{name} applies to a field: {{"field": {{"{name}": …}}}}'
            )
        raise FilterError(_join(place, name), "unknown operator")

    @staticmethod
    def _name(name: str, place: str) -> None:
        if not name or len(name) > MAX_NAME or not name.isprintable():
            raise FilterError(
                place or "(filter)",
                f"a field name must be 1 to {MAX_NAME} printable characters",
            )

    def logical(self, name: str, value: object, place: str, depth: int, *, top: bool) -> _Node:
        """`$not` over a filter, `$and` or `$or` over a list of them, of the same value (at the
        top: of the envelope)."""
        self._count(place)
        if name == "$not":
            if not isinstance(value, dict):
                raise FilterError(place, "takes a filter (a JSON object)")
            inner = self.filter_object(value, place, depth + 1, top=top)
            return _negated(inner, place)
        if not isinstance(value, list) or not value:
            raise FilterError(place, "takes a list of at least one filter")
        if depth + 1 > MAX_DEPTH:
            raise FilterError(place, f"nests deeper than {MAX_DEPTH} levels")
        branches = []
        for i, branch in enumerate(value):
            if not isinstance(branch, dict):
                raise FilterError(f"{place}[{i}]", "must be a filter (a JSON object)")
            branches.append(self.filter_object(branch, f"{place}[{i}]", depth + 2, top=top))
        return _all(branches, place) if name == "$and" else _any(branches, place)

    def field(self, name: str, value: object, place: str, depth: int) -> _Node:
        """The condition on field `name` of the value at the parent place."""
        # Whether it is an object of operators, from its first keys: an object with more
        # keys than the operators allowed is refused by the walk anyway, and a scan of all
        # of them first would read a hostile object whole before refusing it.
        if isinstance(value, dict) and any(
            key.startswith("$") and key not in LOGICAL
            for key in itertools.islice(value, MAX_OPERATORS + 1)
        ):
            condition = self.operators_of(value, place, depth + 1)
        elif isinstance(value, dict):
            condition = self.filter_object(value, place, depth + 1, top=False)
        elif isinstance(value, list):
            raise FilterError(place, "a list is not a value to match: use $in")
        else:
            self._count(place)
            condition = _leaf("$eq", _scalar(value, place), place)
        return _field(name, condition)

    def operators_of(self, document: dict[str, Any], place: str, depth: int) -> _Node:
        if depth > MAX_DEPTH:
            raise FilterError(place, f"nests deeper than {MAX_DEPTH} levels")
        nodes = []
        for op, operand in document.items():
            here = _join(place, op)
            if op not in COMPARISONS:
                if op in LOGICAL:
                    raise FilterError(here, f"{op} takes filters: put it beside the field")
                if op.startswith("$"):
                    raise FilterError(here, "unknown operator")
                raise FilterError(here, "operators and fields cannot be mixed in one object")
            self._count(here)
            nodes.append(_leaf(op, _operand(op, operand, here, depth + 1), here))
        return _all(nodes, place)


# -- operands ------------------------------------------------------------------------------


def _number(value: object, place: str) -> int | float | None:
    """`value` when it is a number the dialect takes (None when it is no number at all)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or abs(value) > MAX_NUMBER:
        raise FilterError(place, f"a number must be within ±{MAX_NUMBER} (2^53 - 1)")
    return value


def _scalar(value: object, place: str) -> object:
    if value is None or isinstance(value, str | bool):
        return value
    if _number(value, place) is not None:
        return value
    raise FilterError(place, "takes a string, a number, true, false or null")


def _operand(op: str, value: object, place: str, depth: int) -> object:
    if op in ("$eq", "$neq"):
        return _scalar(value, place)
    if op in ("$in", "$nin"):
        if depth > MAX_DEPTH:
            raise FilterError(place, f"nests deeper than {MAX_DEPTH} levels")
        if not isinstance(value, list) or not value:
            raise FilterError(place, "takes a list of at least one value")
        if len(value) > MAX_IN:
            raise FilterError(place, f"takes at most {MAX_IN} values")
        return tuple(_scalar(item, f"{place}[{i}]") for i, item in enumerate(value))
    if op == "$exist":
        if not isinstance(value, bool):
            raise FilterError(place, "takes true or false")
        return value
    # $gt $gte $lt $lte
    number = _number(value, place)
    if number is not None:
        return number
    if isinstance(value, str):
        try:
            return parse_time(value)
        except ValueError:
            pass
    raise FilterError(place, "takes a number or an RFC 3339 timestamp such as 2026-05-24T08:15:12Z")


# -- the closures ----------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    kind = type(value)
    return kind is int or kind is float


def _equals(operand: object) -> Predicate:
    """JSON equality with `operand` (true is not 1, 1 is 1.0); a list holds it when one of its
    items does (the dialect's array match)."""
    if operand is None or isinstance(operand, bool):

        def one(v: Any) -> bool:
            return v is operand

    elif isinstance(operand, str):

        def one(v: Any) -> bool:
            return v == operand and type(v) is str

    else:

        def one(v: Any) -> bool:
            return v == operand and (type(v) is int or type(v) is float)

    def test(v: Any) -> bool:
        if type(v) is list:
            return any(one(item) for item in v)
        return one(v)

    return test


def _member(operands: Sequence[object]) -> Predicate:
    strings = frozenset(o for o in operands if type(o) is str)
    numbers = frozenset(o for o in operands if type(o) is int or type(o) is float)
    flags = frozenset(o for o in operands if type(o) is bool)
    null = None in operands

    def one(v: Any) -> bool:
        kind = type(v)
        if kind is str:
            return v in strings
        if kind is int or kind is float:
            return v in numbers
        if kind is bool:
            return v in flags
        return v is None and null

    def test(v: Any) -> bool:
        if type(v) is list:
            return any(one(item) for item in v)
        return one(v)

    return test


def _ordered(op: str, operand: object) -> Predicate:
    if isinstance(operand, datetime):
        at = operand

        def instant(v: Any) -> datetime | None:
            if type(v) is not str:
                return None
            try:
                return parse_time(v)
            except ValueError:
                return None

        if op == "$gt":
            return lambda v: (t := instant(v)) is not None and t > at
        if op == "$gte":
            return lambda v: (t := instant(v)) is not None and t >= at
        if op == "$lt":
            return lambda v: (t := instant(v)) is not None and t < at
        return lambda v: (t := instant(v)) is not None and t <= at
    n: Any = operand
    if op == "$gt":
        return lambda v: (type(v) is int or type(v) is float) and v > n
    if op == "$gte":
        return lambda v: (type(v) is int or type(v) is float) and v >= n
    if op == "$lt":
        return lambda v: (type(v) is int or type(v) is float) and v < n
    return lambda v: (type(v) is int or type(v) is float) and v <= n


def _predicate(op: str, operand: Any) -> Predicate:
    if op == "$eq":
        return _equals(operand)
    if op == "$neq":
        equal = _equals(operand)
        return lambda v: not equal(v)
    if op == "$in":
        member = _member(operand)
        return member
    if op == "$nin":
        member = _member(operand)
        return lambda v: not member(v)
    if op == "$exist":
        if operand:
            return lambda v: v is not ABSENT
        return lambda v: v is ABSENT
    return _ordered(op, operand)


_REASONS = {
    "$eq": "the value is not equal to the operand",
    "$neq": "the value is equal to the operand",
    "$in": "the value is not one of the listed values",
    "$nin": "the value is one of the listed values",
    "$gt": "the value is not above the operand",
    "$gte": "the value is below the operand",
    "$lt": "the value is not below the operand",
    "$lte": "the value is above the operand",
    "$exist": "the field is present",
}


def _why(op: str, operand: object, v: Any) -> str:
    """Why leaf `op` refused the value `v`, in fixed words."""
    if v is ABSENT and op != "$exist":
        return "the field is absent"
    if op in ("$gt", "$gte", "$lt", "$lte"):
        if isinstance(operand, datetime):
            if type(v) is not str or _not_time(v):
                return f"the value is not an RFC 3339 timestamp, which {op} compares here"
        elif not _is_number(v):
            return f"the value is not a number, which {op} compares here"
    return _REASONS[op]


def _not_time(v: str) -> bool:
    try:
        parse_time(v)
    except ValueError:
        return True
    return False


def _leaf(op: str, operand: object, place: str) -> _Node:
    test = _predicate(op, operand)

    def explain(v: Any) -> Refusal | None:
        return None if test(v) else Refusal(place, _why(op, operand, v))

    return _Node(test, explain)


def _field(name: str, condition: _Node) -> _Node:
    test, why = condition.test, condition.explain

    def on_field(obj: Any) -> bool:
        return test(obj.get(name, ABSENT) if type(obj) is dict else ABSENT)

    def explain(obj: Any) -> Refusal | None:
        return why(obj.get(name, ABSENT) if type(obj) is dict else ABSENT)

    return _Node(on_field, explain)


def _all(nodes: Sequence[_Node], place: str) -> _Node:
    tests = tuple(node.test for node in nodes)
    explains = tuple(node.explain for node in nodes)
    test: Predicate
    if len(tests) == 1:
        test = tests[0]
    elif len(tests) == 2:
        first, second = tests
        test = lambda v: first(v) and second(v)  # noqa: E731 - the fastest pair
    else:

        def test(v: Any) -> bool:
            for one in tests:  # noqa: SIM110 - a loop is cheaper than a generator here
                if not one(v):
                    return False
            return True

    def explain(v: Any) -> Refusal | None:
        for why in explains:
            if (refused := why(v)) is not None:
                return refused
        return None

    return _Node(test, explain)


def _any(nodes: Sequence[_Node], place: str) -> _Node:
    tests = tuple(node.test for node in nodes)

    def test(v: Any) -> bool:
        for one in tests:  # noqa: SIM110 - a loop is cheaper than a generator here
            if one(v):
                return True
        return False

    def explain(v: Any) -> Refusal | None:
        if test(v):
            return None
        return Refusal(place, f"none of its {len(tests)} filters matches")

    return _Node(test, explain)


def _negated(node: _Node, place: str) -> _Node:
    inner = node.test

    def test(v: Any) -> bool:
        return not inner(v)

    def explain(v: Any) -> Refusal | None:
        return None if test(v) else Refusal(place, "its filter matches")

    return _Node(test, explain)


def describe(document: Mapping[str, Any] | None) -> str:
    """A filter as one line of compact JSON ("-" for none), for the command line."""
    return "-" if document is None else orjson.dumps(document).decode()
