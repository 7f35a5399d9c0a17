"""An API change costs the same whatever the platform's size: a create or a PATCH, answered
once this process's subscription index has followed it, reads the rows it writes and its own
org's, never every subscription (docs/decisions/0008-index-follows-changes.md); and the
store-wide counts housekeeping takes every few seconds are read off the loop's connection.

Counted in SQLite's virtual-machine steps on both of its connections (the loop's and the
scans' own), which, unlike a time, do not move with the machine's load; the times at 100,000
subscriptions on both stores are `python -m bench.api_scale`'s (docs/performance.md)."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from bench.api_scale import seed
from service.app import Roles
from service.settings import load_settings
from service.store import open_store
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support.api import api_over, create
from tests.support.sqlite_steps import SqliteSteps


async def _change_steps(folder: Path, subscriptions: int) -> tuple[int, int]:
    """The fewest steps of five creates and of five PATCHes through the API, beside
    `subscriptions` others over a third as many orgs (the fewest: housekeeping's background
    reads may fall into one of them)."""
    settings = load_settings(
        database_url=f"sqlite:///{folder}/api-{subscriptions}.db",
        encryption_key=SecretStr(TEST_ENCRYPTION_KEY),
    )
    await seed(settings.database_url, TEST_ENCRYPTION_KEY, subscriptions, subscriptions // 3)
    creates, patches = [], []
    async with api_over(settings, Roles(consumer=False, dispatch=False)) as api:
        for n in range(5):
            async with SqliteSteps(api.store) as steps:
                made = await create(api)
            creates.append(steps.count)
            async with SqliteSteps(api.store) as steps:
                status, body, _ = await api.call("PATCH", f"/{made['id']}", {"rateLimit": n + 1})
            assert status == 200, body
            patches.append(steps.count)
    return min(creates), min(patches)


async def test_an_api_change_reads_no_more_beside_ten_times_the_subscriptions(
    tmp_path: Path,
) -> None:
    small = await _change_steps(tmp_path, 300)
    large = await _change_steps(tmp_path, 3_000)
    # A read of every subscription would be thousands of steps more at 3,000.
    assert large[0] <= small[0] * 1.3 + 10, (small, large)
    assert large[1] <= small[1] * 1.3 + 10, (small, large)


async def test_the_subscription_counts_are_read_off_the_loops_connection(tmp_path: Path) -> None:
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path}/counts.db",
        encryption_key=SecretStr(TEST_ENCRYPTION_KEY),
    )
    await seed(settings.database_url, TEST_ENCRYPTION_KEY, 2_000, 700)
    store = await open_store(settings)
    try:
        async with SqliteSteps(store, scans=False) as on_the_loop:
            counts = await store.subscription_counts()
        async with SqliteSteps(store, loop=False) as in_its_thread:
            await store.subscription_counts()
    finally:
        await store.close()
    assert counts == {"active": 2_000, "deactivated": 0}
    assert in_its_thread.count > 20  # through every row
    assert on_the_loop.count == 0


async def _announce_steps(folder: Path, subscriptions: int) -> int:
    """The steps of housekeeping's minute check for runs of failures to announce, beside
    `subscriptions` healthy ones and one failing."""
    settings = load_settings(
        database_url=f"sqlite:///{folder}/failing-{subscriptions}.db",
        encryption_key=SecretStr(TEST_ENCRYPTION_KEY),
    )
    await seed(settings.database_url, TEST_ENCRYPTION_KEY, subscriptions, subscriptions // 3)
    store = await open_store(settings)
    try:
        failing = await store.create_subscription("org_f", "https://f.example/h", ["a.b"], None)
        connection = store._driver._connection  # type: ignore[attr-defined]
        connection.execute(
            "UPDATE subscriptions SET failing_since = 1, consecutive_failures = 2 WHERE id = ?",
            (failing.id,),
        )
        connection.commit()
        async with SqliteSteps(store) as steps:
            announced = await store.announce_failing(10 * 3_600_000)
        assert announced == 1
        return steps.count
    finally:
        await store.close()


async def test_the_failing_timer_reads_no_more_beside_ten_times_the_subscriptions(
    tmp_path: Path,
) -> None:
    small = await _announce_steps(tmp_path, 300)
    large = await _announce_steps(tmp_path, 3_000)
    # A scan of every subscription would be 10x the steps at 3,000.
    assert large <= small * 1.3 + 10, (small, large)
