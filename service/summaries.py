"""The arithmetic behind a subscription's summary (`domain.Summary`) and its hours
(`domain.HourStats`): which hourly counter an attempt adds to, which period a count goes to, and
the p95 read back from the latency buckets. Pure functions: the store writes and sums the
counters, this says what they mean."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from service.domain import HourStats

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

DELIVERIES = "deliveries"
"""The counter of deliveries made, by the day: summed over the whole retention."""
OK = "ok"
"""The counter of 2xx attempts, by the hour."""

FAILED = "failed:"
"""The prefix of the counters of failed attempts by the hour, one per result class
(`failed:5xx`, `failed:timeout`…; `service.delivery.attempt.ResultClass`)."""


def failed_counter(result: str) -> str:
    """The counter of a failed attempt whose result class is `result`."""
    return FAILED + result


LATENCY_BUCKETS_MS = (
    5, 10, 25, 50, 75, 100, 150, 250, 400, 600, 1000, 1500, 2500, 4000, 6000, 10000, 15000, 30000
)  # fmt: skip
"""Upper bounds of the attempt-duration counters (`le:<ms>`, and `le:inf` past the last): a
24 h p95 is read from them, interpolated within its bucket as Prometheus' histogram_quantile
does, so it is exact to the bucket's width (at most 40 % of the value above 100 ms)."""


def latency_counter(bound_or_ms: int | None) -> str:
    """The counter of an attempt that took `bound_or_ms` ms (None: the `inf` bucket's)."""
    if bound_or_ms is not None:
        for bound in LATENCY_BUCKETS_MS:
            if bound_or_ms <= bound:
                return f"le:{bound}"
    return "le:inf"


LATENCY_COUNTERS = tuple(latency_counter(b) for b in (*LATENCY_BUCKETS_MS, None))
"""Every latency counter, in bucket order (`inf` last): what `p95` takes the counts of."""


def period(at: int, counter: str) -> int:
    """The period (epoch ms) a count at `at` goes to: deliveries by the day (30 rows a
    subscription over the retention, not 720), the attempts' counters by the hour (read for
    the last 24 hours only)."""
    return at - at % (DAY_MS if counter == DELIVERIES else HOUR_MS)


def p95(counts: Sequence[int]) -> int | None:
    """The 95th percentile of attempt durations from the counts per latency bucket
    (`LATENCY_BUCKETS_MS` then `inf`), interpolated linearly within its bucket; a value past
    the last bound is reported as that bound. None without attempts."""
    total = sum(counts)
    if not total:
        return None
    rank = 0.95 * total
    below = 0
    lower = 0
    for bound, n in zip((*LATENCY_BUCKETS_MS, None), counts, strict=True):
        if n and below + n >= rank:
            if bound is None:
                return lower
            return round(lower + (bound - lower) * (rank - below) / n)
        below += n
        lower = bound if bound is not None else lower
    return lower


def hours(rows: Iterable[tuple[int, str, int]], now: int, count: int = 24) -> list[HourStats]:
    """The last `count` hours up to the one holding `now`, oldest first, from the hourly
    counters' rows (period, counter, n); an hour without a row is all zeros. Attempts are the
    sum of the latency buckets (every attempt adds to one), failures those not `OK`; failures
    counted before the classes were kept are `other`."""
    last = period(now, OK)
    starts = [last - (count - 1 - i) * HOUR_MS for i in range(count)]
    counters: dict[int, dict[str, int]] = {start: {} for start in starts}
    for start, counter, n in rows:
        if start in counters:
            counters[start][counter] = counters[start].get(counter, 0) + n
    stats = []
    for start in starts:
        mine = counters[start]
        latencies = [mine.get(counter, 0) for counter in LATENCY_COUNTERS]
        attempts = sum(latencies)
        ok = mine.get(OK, 0)
        failed = {
            name.removeprefix(FAILED): n
            for name, n in sorted(mine.items())
            if name.startswith(FAILED) and n
        }
        other = attempts - ok - sum(failed.values())
        if other > 0:
            failed["other"] = other
        stats.append(HourStats(start, attempts, ok, failed, p95(latencies)))
    return stats
