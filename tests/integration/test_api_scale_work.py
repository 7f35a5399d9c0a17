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
from service.appkeys import INDEX, METRICS
from service.delivery.housekeeping import Housekeeping
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


async def _deactivated_steps(folder: Path, subscriptions: int) -> tuple[int, int, int]:
    """The deactivated count beside `subscriptions` active ones and two deactivated: the
    count, and its steps on the scans' connection and on the loop's."""
    settings = load_settings(
        database_url=f"sqlite:///{folder}/counts-{subscriptions}.db",
        encryption_key=SecretStr(TEST_ENCRYPTION_KEY),
    )
    by_org = await seed(settings.database_url, TEST_ENCRYPTION_KEY, subscriptions, 100)
    store = await open_store(settings)
    try:
        for org in sorted(by_org)[:2]:
            assert await store.deactivate_subscription(by_org[org][0], "410 Gone")
        async with SqliteSteps(store, scans=False) as on_the_loop:
            await store.deactivated_subscriptions()
        async with SqliteSteps(store, loop=False) as in_its_thread:
            counted = await store.deactivated_subscriptions()
    finally:
        await store.close()
    return counted, in_its_thread.count, on_the_loop.count


async def test_the_deactivated_count_reads_the_deactivated_alone_off_the_loops_connection(
    tmp_path: Path,
) -> None:
    """Housekeeping's gauge every 5 s: the active subscriptions are the index's count, the
    deactivated ones are read from the state index's entries of them, never every row."""
    small = await _deactivated_steps(tmp_path, 300)
    large = await _deactivated_steps(tmp_path, 3_000)
    assert small[0] == large[0] == 2
    # A read of every subscription would be thousands of steps more at 3,000.
    assert large[1] <= small[1] * 1.3 + 10, (small, large)
    assert small[2] == large[2] == 0


async def test_the_subscriptions_gauge_counts_the_index_and_the_deactivated(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path}/gauge.db",
        encryption_key=SecretStr(TEST_ENCRYPTION_KEY),
    )
    async with api_over(settings, Roles(consumer=False, dispatch=False)) as api:
        kept, gone = await create(api), await create(api)
        await create(api)
        assert await api.store.deactivate_subscription(kept["id"], "410 Gone")
        status, _, _ = await api.call("DELETE", f"/{gone['id']}")
        assert status == 204
        await api.store.create_subscription("org_c", "https://c.example/h", ["a.b"], None)
        await api.client.app[INDEX].refresh()
        # Housekeeping's reading, as its timer takes it, into the app's gauges.
        metrics = api.client.app[METRICS]
        await Housekeeping(api.store, metrics, retention=3600).read_gauges()
        async with api.client.get("/metrics") as response:
            text = await response.text()
    assert 'webhooks_subscriptions{state="active"} 2.0' in text
    assert 'webhooks_subscriptions{state="deactivated"} 1.0' in text


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
