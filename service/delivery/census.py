"""The census of sealed values housekeeping keeps on a timer, at a cost that does not grow with
the history (docs/decisions/0018-store-wide-counts-at-scale.md).

The two large tables are counted by bucket (`CENSUS_BUCKETS`: events by the ten minutes they
were received in, attempts by blocks of ids), each bucket's tally kept with the pass that
counted it. The first pass counts everything: a key removed too early shows up then, at the
start that removed it. Every later pass recounts

- the newest bucket and everything after it (what arrived since; a row committed late into an
  older bucket waits for that bucket's turn);
- then older buckets, those holding values the current key did not seal first (what `rekey`
  turns into current ones), then the longest uncounted, until `budget` rows are read (at least
  one bucket a pass),

so removals (retention, erasure) and a `rekey` beside the service reach the figures within a
sweep of the history, and new rows at once. The small tables (subscriptions, the store's keys)
are counted whole every pass. What must be exact when it is asked — is anything left that an
old key sealed? — is `rekey`'s own census (`PersonalData.sealed_census`), which reads every row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from service.store import CENSUS_BUCKETS, SealedCensus

BUDGET = 1_000_000  # rows of older buckets recounted a pass, beside the newest ones
_NOTHING = SealedCensus(0, 0, 0, 0)


class Counted(Protocol):
    async def sealed_buckets(
        self, table: str, first: int | None = None, end: int | None = None
    ) -> dict[int, SealedCensus]: ...

    async def sealed_settings(self) -> SealedCensus: ...


@dataclass
class _Bucket:
    tally: SealedCensus
    counted: int  # the pass that counted it


class RollingCensus:
    """The census, kept by buckets and recounted a part at a time (see the module docstring)."""

    def __init__(self, store: Counted, budget: int = BUDGET) -> None:
        self._store = store
        self._budget = budget
        self._passes = 0
        self._tables: dict[str, dict[int, _Bucket]] = {}
        self.last_read: dict[str, list[int]] = {}
        """The older buckets each table's last pass recounted one by one."""

    async def take(self) -> SealedCensus:
        """One pass: the census as it now stands."""
        self._passes += 1
        census = await self._store.sealed_settings()
        for table in CENSUS_BUCKETS:
            buckets = self._tables.get(table)
            if buckets is None:
                self._tables[table] = buckets = {}
                await self._recount(table, buckets, None, None)
                self.last_read[table] = []
            else:
                newest = max(buckets, default=None)
                await self._recount(table, buckets, newest, None)
                older = self.older_due(buckets, newest)
                for first, end in _runs(older):  # one read per run of neighbours
                    await self._recount(table, buckets, first, end)
                self.last_read[table] = older
            for kept in buckets.values():
                census = census.plus(kept.tally)
        return census

    async def _recount(
        self, table: str, buckets: dict[int, _Bucket], first: int | None, end: int | None
    ) -> None:
        """Counts the buckets from `first` to before `end` again (None: no bound), and puts
        their tallies in place of the ones kept (a bucket emptied since goes)."""
        fresh = await self._store.sealed_buckets(table, first, end)
        for bucket in [b for b in buckets if _within(b, first, end)]:
            del buckets[bucket]
        for bucket, tally in fresh.items():
            buckets[bucket] = _Bucket(tally, self._passes)

    def older_due(self, buckets: dict[int, _Bucket], newest: int | None) -> list[int]:
        """The buckets before `newest` to recount this pass, in order: those holding values the
        current key did not seal, then the longest uncounted, within the budget of rows."""
        if newest is None:
            return []
        waiting = sorted(
            (b for b in buckets if b < newest),
            key=lambda b: (buckets[b].tally.settled, buckets[b].counted, b),
        )
        chosen: list[int] = []
        rows = 0
        for bucket in waiting:
            size = buckets[bucket].tally.rows
            if chosen and rows + size > self._budget:
                break
            chosen.append(bucket)
            rows += size
        return chosen


def _runs(buckets: list[int]) -> list[tuple[int, int]]:
    """`buckets` as ranges [first, end) of consecutive ones."""
    runs: list[tuple[int, int]] = []
    for bucket in sorted(buckets):
        if runs and runs[-1][1] == bucket:
            runs[-1] = (runs[-1][0], bucket + 1)
        else:
            runs.append((bucket, bucket + 1))
    return runs


def _within(bucket: int, first: int | None, end: int | None) -> bool:
    return (first is None or bucket >= first) and (end is None or bucket < end)
