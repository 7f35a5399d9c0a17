"""How `make test` spreads the suite over pytest-xdist's workers: one test at a time, except the
tests under each of `TOGETHER`'s paths, which go to one worker together and run there one after
another (beside the tests of other paths on other workers).

- tests/chaos/: the fault tests kill and stall processes, start private brokers and measure
  recovery times that a second fault beside them would distort;
- test_hostile_records.py: its tests share one service process (a module fixture) and add up
  one tally that the last of them writes to var/fuzz/records.json;
- test_endpoint_auth.py: its delivery tests share one service (a module fixture);
- test_feeds_serve.py: its tests share two service processes (a module fixture).

Every other test makes its own topics, consumer group, database and ports, and runs beside any
other. The grouping is by path rather than by `xdist_group` marks, which pytest 9 no longer lets
pytest-xdist 3.8 read.
"""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling

TOGETHER = (
    "tests/chaos/",
    "tests/integration/test_hostile_records.py",
    "tests/integration/test_endpoint_auth.py",
    "tests/integration/test_feeds_serve.py",
)


class TogetherScheduling(LoadScopeScheduling):
    """pytest-xdist's scope scheduling with a scope per test, or per path of `TOGETHER`."""

    def _split_scope(self, nodeid: str) -> str:
        for path in TOGETHER:
            if nodeid.startswith(path):
                return path
        return nodeid
