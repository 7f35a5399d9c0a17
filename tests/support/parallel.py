"""How `make test` spreads the suite over pytest-xdist's workers: one test at a time, except the
tests under a serial folder, which go to one worker together and run there one after another.

The fault tests (tests/chaos) kill and stall processes, start private brokers and measure
recovery times that a second fault beside them would distort; every other test makes its own
topics, consumer group, database and ports, and runs beside any other. The grouping is by path
rather than by `xdist_group` marks, which pytest 9 no longer lets pytest-xdist 3.8 read.
"""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling

SERIAL_FOLDERS = ("tests/chaos/",)


class SerialFoldersScheduling(LoadScopeScheduling):
    """pytest-xdist's scope scheduling with a scope per test, or per serial folder."""

    def _split_scope(self, nodeid: str) -> str:
        for folder in SERIAL_FOLDERS:
            if nodeid.startswith(folder):
                return folder
        return nodeid
