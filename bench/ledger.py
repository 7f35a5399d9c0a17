"""The ledger a run must balance to count, and the latency figures taken from the same receipts.

    expected  = events produced (acknowledged by Kafka) x subscriptions in the ledger
    delivered = distinct (event, subscription) pairs the receiver answered 2xx
    missing   = expected pairs never answered 2xx
    duplicates (a pair answered 2xx again) and unexpected pairs are counted apart.

It balances when every produce was acknowledged, nothing unexpected arrived, the store agrees
with the receiver (the pairs it marks `sent` are exactly the delivered ones), and, for a run that
was drained (the receiver counted everything owed), nothing is missing: a duplicate must not hide
a lost delivery. A run that ends behind on purpose (a ramp) may have missing pairs; they are open
or failed in the store, or absent from it when still unconsumed in Kafka. A run that does not
balance is void: its figures are reported as such, never as a number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.stack import StoreRow
from tools.sink import Receipts


@dataclass(frozen=True)
class Ledger:
    expected: int
    delivered: int
    missing: int
    duplicates: int
    unexpected: int
    produce_failed: int
    store_sent: int
    store_open: int
    store_failed: int
    store_absent: int
    store_agrees: bool
    balanced: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def first_arrivals(receipts: Receipts, paths: set[str]) -> tuple[dict[tuple[str, str], float], int]:
    """(event, path) -> time of its first 2xx answer, and how many 2xx repeats there were."""
    first: dict[tuple[str, str], float] = {}
    duplicates = 0
    for path, event, at, status in zip(
        receipts.path, receipts.event, receipts.at, receipts.status, strict=True
    ):
        if path not in paths or not 200 <= status < 300:
            continue
        key = (event, path)
        if key in first:
            duplicates += 1
        else:
            first[key] = at
    return first, duplicates


def balance(
    *,
    expected_pairs: set[tuple[str, str]],
    produce_failed: int,
    paths: set[str],
    first: Mapping[tuple[str, str], float],
    duplicates: int,
    store_rows: Iterable[StoreRow] | None,
    names: Mapping[str, str],
    drained: bool,
) -> Ledger:
    """The ledger of one run. `expected_pairs` are (event id, receiver path); `first` and
    `duplicates` come from `first_arrivals`; `names` maps subscription id -> receiver path;
    `store_rows` is None when the store could not be read (then the store cannot agree, and the
    run is void); `drained` says the run waited until the receiver had everything owed."""
    arrived = set(first)
    delivered_pairs = arrived & expected_pairs
    unexpected = len(arrived - expected_pairs)
    missing_pairs = expected_pairs - delivered_pairs
    sent: set[tuple[str, str]] = set()
    open_: set[tuple[str, str]] = set()
    failed: set[tuple[str, str]] = set()
    agrees = False
    absent = 0
    if store_rows is not None:
        for row in store_rows:
            path = names.get(row.subscription_id)
            if path not in paths:
                continue
            pair = (row.event_id, path)
            if row.status == "sent":
                sent.add(pair)
            elif row.status == "failed":
                failed.add(pair)
            else:
                open_.add(pair)
        absent = len(expected_pairs - sent - open_ - failed)
        # Then every missing pair is open, failed or absent (lost) in the store.
        agrees = sent == delivered_pairs
    delivered, missing = len(delivered_pairs), len(missing_pairs)
    balanced = unexpected == 0 and produce_failed == 0 and agrees and (missing == 0 or not drained)
    return Ledger(
        expected=len(expected_pairs),
        delivered=delivered,
        missing=missing,
        duplicates=duplicates,
        unexpected=unexpected,
        produce_failed=produce_failed,
        store_sent=len(sent),
        store_open=len(open_),
        store_failed=len(failed),
        store_absent=absent,
        store_agrees=agrees,
        balanced=balanced,
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary_ms(latencies_s: Sequence[float]) -> dict[str, float]:
    ordered = sorted(latencies_s)
    return {
        "n": float(len(ordered)),
        "p50_ms": percentile(ordered, 50) * 1000,
        "p95_ms": percentile(ordered, 95) * 1000,
        "p99_ms": percentile(ordered, 99) * 1000,
        "max_ms": (ordered[-1] * 1000) if ordered else math.nan,
    }


def latencies(
    first: Mapping[tuple[str, str], float],
    scheduled: Mapping[str, float],
    *,
    paths: set[str],
    window: tuple[float, float] | None = None,
) -> list[float]:
    """Arrival minus scheduled send time, in seconds, for pairs of `paths` whose event was
    scheduled inside `window` (all when None)."""
    out: list[float] = []
    for (event, path), at in first.items():
        if path not in paths:
            continue
        sent = scheduled.get(event)
        if sent is None:
            continue
        if window is not None and not window[0] <= sent < window[1]:
            continue
        out.append(at - sent)
    return out
