"""The suite's own scheduling (tests/support/parallel.py) still plugs into pytest-xdist: it
overrides a method that pytest-xdist does not document, and a rename would silently put the
fault tests on several workers at once."""

from __future__ import annotations

import inspect

from xdist.scheduler import LoadScopeScheduling

from tests.support.parallel import TOGETHER, TogetherScheduling


def test_pytest_xdist_still_asks_the_scheduler_for_a_scope() -> None:
    assert "_split_scope" in vars(LoadScopeScheduling)
    ours = inspect.signature(TogetherScheduling._split_scope)
    theirs = inspect.signature(LoadScopeScheduling._split_scope)
    assert list(ours.parameters) == list(theirs.parameters)


def test_the_fault_tests_share_a_scope_and_other_tests_have_their_own() -> None:
    # The scope is a pure function of the node id: no need for a running session.
    split = object.__new__(TogetherScheduling)._split_scope
    chaos = [split(f"{TOGETHER[0]}test_faults.py::test_{n}") for n in ("a", "b")]
    assert chaos[0] == chaos[1] == TOGETHER[0]
    units = {split(f"tests/unit/test_x.py::test_{n}") for n in ("a", "b")}
    assert len(units) == 2
