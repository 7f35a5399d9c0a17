"""One contract for the store interface, run against SQLite and the real PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace

import asyncpg
import pytest

from service import ids
from service.clock import now_ms
from service.delivery.census import RollingCensus
from service.domain import (
    AuditFilter,
    DeliveryFilter,
    DeliveryJob,
    DeliveryStatus,
    IncomingEvent,
    NewDelivery,
    Subscription,
)
from service.errors import InvalidInput
from service.matching import SubscriptionIndex
from service.settings import Settings
from service.store import (
    CENSUS_BUCKETS,
    ChangedSubscriptions,
    Claim,
    IndexBehind,
    Lease,
    PageRequest,
    Recorded,
    Sealed,
    Store,
    SubscriptionChanges,
    open_store,
)
from service.store.migrate import sqlite_path
from service.store.sql import base as sql_base
from tests.support.raw import column_values
from tests.support.roundtrips import counting
from tests.support.store import EVENTS, attempt, incoming, recorded, seal_elsewhere


async def test_ping(store: Store) -> None:
    assert await store.ping() is True


async def test_api_keys_are_stored_hashed_and_revocable(store: Store, database_url: str) -> None:
    record, key = await store.create_api_key("org_a", "ci")
    assert key.startswith("qe_key_")
    assert len(key) > 40
    assert await store.org_for_api_key(key) == "org_a"
    assert await store.org_for_api_key(key + "x") is None
    assert [k.id for k in await store.list_api_keys()] == [record.id]
    assert key not in repr(await store.list_api_keys())
    assert await store.revoke_api_key(record.id) is True
    assert await store.revoke_api_key(record.id) is False
    assert await store.org_for_api_key(key) is None


async def test_subscription_secret_is_encrypted_at_rest(
    store: Store, settings_for: Settings
) -> None:
    created = await store.create_subscription("org_a", "https://a.example/h", EVENTS, "kyc@1")
    assert created.secret is not None
    assert created.secret.startswith("qe_whsec_")
    fetched = await store.get_subscription("org_a", created.id)
    assert fetched is not None
    assert fetched.secret == created.secret
    assert created.secret not in repr(fetched)
    raw = await _raw_secret_column(settings_for, created.id)
    assert created.secret not in raw
    assert "qe_whsec_" not in raw


async def _raw_secret_column(settings: Settings, subscription_id: str) -> str:
    if settings.is_postgres:
        conn = await asyncpg.connect(settings.database_url)
        try:
            value: str = await conn.fetchval(
                "SELECT secret_enc FROM subscriptions WHERE id = $1", subscription_id
            )
            return value
        finally:
            await conn.close()
    with sqlite3.connect(sqlite_path(settings.database_url)) as lite:
        (value,) = lite.execute(
            "SELECT secret_enc FROM subscriptions WHERE id = ?", (subscription_id,)
        ).fetchone()
        return str(value)


async def test_org_scoping(store: Store) -> None:
    mine = await store.create_subscription("org_a", "https://a.example/h", EVENTS, None)
    assert await store.get_subscription("org_b", mine.id) is None
    assert (
        await store.update_subscription("org_b", mine.id, SubscriptionChanges(active=False)) is None
    )
    assert await store.delete_subscription("org_b", mine.id) is False
    assert (await store.list_subscriptions("org_b", 10, None)).rows == []
    assert await store.get_subscription("org_a", mine.id) is not None


async def test_paging_walks_every_row_once(store: Store) -> None:
    created = [
        (await store.create_subscription("org_p", f"https://p.example/{i}", EVENTS, None)).id
        for i in range(7)
    ]
    seen: list[str] = []
    after = None
    while True:
        page = await store.list_subscriptions("org_p", 3, after)
        seen += [s.id for s in page.rows]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == created


async def test_update_changes_only_given_fields_and_bumps_revision(store: Store) -> None:
    created = await store.create_subscription("org_a", "https://a.example/h", EVENTS, "v1")
    before = await store.subscriptions_revision()
    updated = await store.update_subscription(
        "org_a", created.id, SubscriptionChanges(events=("review.overridden",))
    )
    assert updated is not None
    assert updated.events == ("review.overridden",)
    assert updated.url == created.url
    assert updated.installed_by == "v1"
    assert updated.secret == created.secret
    assert await store.subscriptions_revision() > before


async def test_data_fields_are_kept_read_everywhere_and_changed_with_the_revision(
    store: Store,
) -> None:
    fields = ("status", "customerId", "notInTheEvent")
    created = await store.create_subscription(
        "org_a", "https://a.example/h", EVENTS, None, data_fields=fields
    )
    plain = await store.create_subscription("org_a", "https://a.example/h", EVENTS, None)
    assert (created.data_fields, plain.data_fields) == (fields, None)
    got = await store.get_subscription("org_a", created.id)
    assert got is not None
    assert got.data_fields == fields
    listed = await store.list_subscriptions("org_a", 10, None)
    assert {s.id: s.data_fields for s in listed.rows} == {created.id: fields, plain.id: None}
    before = await store.subscriptions_revision()
    changed = await store.update_subscription(
        "org_a", created.id, SubscriptionChanges(data_fields=("score",))
    )
    assert changed is not None
    assert changed.data_fields == ("score",)
    assert await store.subscriptions_revision() > before  # every index reloads it
    (active,) = [s for s in await store.active_subscriptions() if s.id == created.id]
    assert active.data_fields == ("score",)
    cleared = await store.update_subscription(
        "org_a", created.id, SubscriptionChanges(data_fields=None)
    )
    assert cleared is not None
    assert cleared.data_fields is None


async def test_a_content_filter_is_kept_sealed_and_changed_with_the_revision(
    store: Store, settings_for: Settings
) -> None:
    document = '{"data":{"customerId":{"$in":["cus_filter_canary"]}}}'
    created = await store.create_subscription(
        "org_a", "https://a.example/h", EVENTS, None, content_filter=document
    )
    assert created.filter == document
    got = await store.get_subscription("org_a", created.id)
    assert got is not None
    assert got.filter == document
    (stored,) = await column_values(settings_for.database_url, "subscriptions", "content_filter")
    assert "cus_filter_canary" not in stored  # sealed: it may name a customer
    before = await store.subscriptions_revision()
    changed = await store.update_subscription(
        "org_a", created.id, SubscriptionChanges(content_filter='{"event":"x"}')
    )
    assert changed is not None
    assert changed.filter == '{"event":"x"}'
    assert await store.subscriptions_revision() > before  # every index compiles it again
    cleared = await store.update_subscription(
        "org_a", created.id, SubscriptionChanges(content_filter=None)
    )
    assert cleared is not None
    assert cleared.filter is None


async def test_concurrent_header_patches_are_all_merged(store: Store) -> None:
    """Each PATCH merges with the headers as the one before it left them: none is lost."""
    sub = await store.create_subscription(
        "org_a", "https://a.example/h", EVENTS, None, headers=(("Authorization", "Bearer x"),)
    )
    patches = [SubscriptionChanges(headers={f"X-H{i}": str(i)}) for i in range(8)]
    await asyncio.gather(*(store.update_subscription("org_a", sub.id, p) for p in patches))
    merged = await store.get_subscription("org_a", sub.id)
    assert merged is not None
    expected = {"Authorization": "Bearer x", **{f"X-H{i}": str(i) for i in range(8)}}
    assert dict(merged.headers) == expected
    # Over the limits once merged: refused, nothing written.
    with pytest.raises(InvalidInput) as refused:
        await store.update_subscription(
            "org_a", sub.id, SubscriptionChanges(headers={f"X-N{i}": "v" for i in range(12)})
        )
    assert [field for field, _ in refused.value.errors] == ["headers"]
    unchanged = await store.get_subscription("org_a", sub.id)
    assert unchanged is not None
    assert dict(unchanged.headers) == expected


async def due_jobs(store: Store, delivery_ids: list[str], owner: str = "me") -> list[DeliveryJob]:
    """What a claimer would be handed of these deliveries once `owner` gives them back."""
    await store.release(delivery_ids, owner)
    jobs = await store.claim_due(Claim("reader", 1000, 60_000))
    await store.release([job.id for job in jobs], "reader")
    return [job for job in jobs if job.id in delivery_ids]


async def test_record_events_is_idempotent_per_event_and_subscription(store: Store) -> None:
    sub = await store.create_subscription("org_a", "https://a.example/h", EVENTS, None)
    event = incoming()
    first = NewDelivery(ids.new_id("whd"), event.id, sub.id, event.event, event.org_id)
    created = await store.record_events([event], [first], Lease("me", 60_000))
    assert created == [first]
    replay = NewDelivery(ids.new_id("whd"), event.id, sub.id, event.event, event.org_id)
    assert await store.record_events([event], [replay], Lease("me", 60_000)) == []
    summary = await store.subscription_summaries([sub.id])
    assert summary[sub.id].delivery_count == 1
    (job,) = await due_jobs(store, [first.id])
    assert job.body == event.body
    assert job.event == "verification.created"


async def test_an_event_id_reused_by_another_org_never_crosses_over(store: Store) -> None:
    mine = await store.create_subscription("org_a", "https://a.example/h", EVENTS, None)
    theirs = await store.create_subscription("org_b", "https://b.example/h", EVENTS, None)
    ours = incoming("org_a")
    hostile = IncomingEvent(
        ours.id, "org_b", ours.event, ours.occurred_at, b'{"org":"b"}', None, None
    )
    d_ours = NewDelivery(ids.new_id("whd"), ours.id, mine.id, ours.event, "org_a")
    d_theirs = NewDelivery(ids.new_id("whd"), hostile.id, theirs.id, hostile.event, "org_b")
    await store.record_events([ours, hostile], [d_ours, d_theirs], Lease("me", 60_000))
    jobs = {job.id: job.body for job in await due_jobs(store, [d_ours.id, d_theirs.id])}
    assert jobs == {d_ours.id: ours.body, d_theirs.id: b'{"org":"b"}'}


async def test_leases_keep_two_claimers_apart(store: Store) -> None:
    _, deliveries = await recorded(store, "ingest", 60_000, 20)
    # Leased by ingest: nobody else may claim them.
    assert await store.claim_due(Claim("other", 100, 60_000)) == []
    await store.release([d.id for d in deliveries], "other")  # not its to give back
    assert await store.claim_due(Claim("other", 100, 60_000)) == []
    await store.release([d.id for d in deliveries], "ingest")
    a, b = await asyncio.gather(
        store.claim_due(Claim("a", 12, 60_000)), store.claim_due(Claim("b", 12, 60_000))
    )
    claimed_a = {j.id for j in a}
    claimed_b = {j.id for j in b}
    assert not claimed_a & claimed_b
    assert claimed_a | claimed_b == {d.id for d in deliveries}
    assert await store.claim_due(Claim("c", 100, 60_000)) == []


async def test_a_paused_subscriptions_deliveries_wait_until_it_is_enabled(store: Store) -> None:
    sub, [delivery] = await recorded(store, "me", 0)
    await store.update_subscription("org_a", sub.id, SubscriptionChanges(active=False))
    await asyncio.sleep(0.01)
    assert await store.claim_due(Claim("me", 10, 60_000)) == []
    assert await store.pending_count() == 1
    await store.update_subscription("org_a", sub.id, SubscriptionChanges(active=True))
    assert [job.id for job in await store.claim_due(Claim("me", 10, 60_000))] == [delivery.id]


async def test_leases_are_renewed_only_by_their_owner(store: Store) -> None:
    _, [delivery] = await recorded(store, "me", 50)
    await store.renew([delivery.id], "someone-else", 60_000)
    await asyncio.sleep(0.1)
    assert [job.id for job in await store.claim_due(Claim("thief", 10, 0))] == [delivery.id]
    await store.renew([delivery.id], "thief", 60_000)
    await asyncio.sleep(0.01)
    assert await store.claim_due(Claim("me", 10, 60_000)) == []


async def test_expired_leases_are_claimable(store: Store) -> None:
    _, [delivery] = await recorded(store, "crashed-replica", 0)
    await asyncio.sleep(0.01)
    (job,) = await store.claim_due(Claim("survivor", 10, 60_000))
    assert job.id == delivery.id


async def test_claims_filter_by_subscription_and_exclusions(store: Store) -> None:
    one = await store.create_subscription("org_a", "https://a.example/1", EVENTS, None)
    two = await store.create_subscription("org_a", "https://a.example/2", EVENTS, None)
    event = incoming()
    d1 = NewDelivery(ids.new_id("whd"), event.id, one.id, event.event, event.org_id)
    d2 = NewDelivery(ids.new_id("whd"), event.id, two.id, event.event, event.org_id)
    await store.record_events([event], [d1, d2], Lease("x", 0))
    await asyncio.sleep(0.01)
    assert [j.id for j in await store.claim_due(Claim("me", 10, 60_000, exclude=[one.id]))] == [
        d2.id
    ]
    await store.release([d2.id], "me")
    assert [
        j.id for j in await store.claim_due(Claim("me", 10, 60_000, subscription_id=one.id))
    ] == [d1.id]


async def test_attempts_drive_status_summary_and_the_failure_clock(store: Store) -> None:
    sub, [delivery] = await recorded(store, "me", 60_000)
    t0 = now_ms() - 60_000  # so that each retry (t + 5 s) is due at once
    clocks = await store.record_attempts(
        [attempt(delivery, 1, DeliveryStatus.RETRYING, 500, t0)], "me"
    )
    assert clocks == Recorded({sub.id: t0}, frozenset())
    summary = (await store.subscription_summaries([sub.id]))[sub.id]
    assert summary.delivery_count == 1
    assert summary.last_delivery is not None
    assert summary.last_delivery.status is DeliveryStatus.RETRYING
    assert summary.last_delivery.response_code == 500
    assert summary.last_delivery.at == t0
    # Retried later: a second failure keeps the clock where it started.
    assert [j.attempts for j in await store.claim_due(Claim("me", 10, 60_000))] == [1]
    clocks = await store.record_attempts(
        [attempt(delivery, 2, DeliveryStatus.RETRYING, 500, t0 + 10)], "me"
    )
    assert clocks.failing_since == {sub.id: t0}
    assert [j.attempts for j in await store.claim_due(Claim("me", 10, 60_000))] == [2]
    clocks = await store.record_attempts(
        [attempt(delivery, 3, DeliveryStatus.SENT, 200, t0 + 20)], "me"
    )
    assert clocks.failing_since == {sub.id: None}
    summary = (await store.subscription_summaries([sub.id]))[sub.id]
    assert summary.last_delivery is not None
    assert summary.last_delivery.status is DeliveryStatus.SENT
    assert summary.last_delivery.response_code == 200
    assert await store.pending_count() == 0


async def test_an_outcome_writes_attempts_and_counters_only_where_the_lease_is_held(
    store: Store,
) -> None:
    sub, [kept, taken] = await recorded(store, "me", 60_000, count=2)
    at = now_ms()
    # Another replica's outcomes for deliveries it does not hold: nothing is written.
    fenced = await store.record_attempts(
        [attempt(kept, 1, DeliveryStatus.SENT, 200, at)], "someone-else"
    )
    assert fenced.lost == frozenset({kept.id})
    await store.release([taken.id], "me")
    recorded_now = await store.record_attempts(
        [
            attempt(kept, 1, DeliveryStatus.SENT, 200, at),
            attempt(taken, 1, DeliveryStatus.RETRYING, 500, at),
        ],
        "me",
    )
    assert recorded_now.lost == frozenset({taken.id})
    summary = (await store.subscription_summaries([sub.id]))[sub.id]
    assert (summary.delivery_count, summary.attempts_24h, summary.ok_24h) == (2, 1, 1)
    entry = await store.get_delivery("org_a", sub.id, kept.id)
    assert entry is not None
    assert [(a.number, a.response_code) for a in entry.attempts] == [(1, 200)]
    other = await store.get_delivery("org_a", sub.id, taken.id)
    assert other is not None
    assert other.attempts == ()


async def test_delete_cancels_open_deliveries(store: Store) -> None:
    sub, _ = await recorded(store, "me", 0)
    assert await store.pending_count() == 1
    assert await store.delete_subscription("org_a", sub.id) is True
    assert await store.pending_count() == 0
    assert await store.get_subscription("org_a", sub.id) is None
    assert await store.claim_due(Claim("me", 10, 60_000)) == []
    assert sub.id not in {s.id for s in await store.active_subscriptions()}


async def test_deactivate_fails_open_deliveries_and_reactivation_clears_reason(
    store: Store,
) -> None:
    sub, _ = await recorded(store, "me", 0)
    assert await store.deactivate_subscription(sub.id, "410 Gone") is True
    assert await store.deactivate_subscription(sub.id, "410 Gone") is False
    got = await store.get_subscription("org_a", sub.id)
    assert got is not None
    assert got.active is False
    assert got.deactivated_reason == "410 Gone"
    summary = (await store.subscription_summaries([sub.id]))[sub.id]
    assert summary.last_delivery is not None
    assert summary.last_delivery.status is DeliveryStatus.FAILED
    again = await store.update_subscription("org_a", sub.id, SubscriptionChanges(active=True))
    assert again is not None
    assert again.active is True
    assert again.deactivated_reason is None


async def test_deactivated_subscriptions_are_counted(store: Store) -> None:
    assert await store.deactivated_subscriptions() == 0
    one = await store.create_subscription("org_a", "https://a.example/1", EVENTS, None)
    await store.create_subscription("org_a", "https://a.example/2", EVENTS, None)
    gone = await store.create_subscription("org_a", "https://a.example/3", EVENTS, None)
    await store.deactivate_subscription(one.id, "410 Gone")
    await store.delete_subscription("org_a", gone.id)
    paused = await store.create_subscription("org_a", "https://a.example/4", EVENTS, None)
    await store.update_subscription("org_a", paused.id, SubscriptionChanges(active=False))
    assert await store.deactivated_subscriptions() == 2


async def test_purge_removes_only_finished_old_deliveries(store: Store) -> None:
    sub = await store.create_subscription("org_a", "https://a.example/h", EVENTS, None)
    done_event, open_event = incoming(), incoming()
    done = NewDelivery(
        ids.new_id("whd"), done_event.id, sub.id, done_event.event, done_event.org_id
    )
    still_open = NewDelivery(
        ids.new_id("whd"), open_event.id, sub.id, open_event.event, open_event.org_id
    )
    await store.record_events([done_event, open_event], [done, still_open], Lease("me", 60_000))
    await store.record_attempts(
        [attempt(done, 1, DeliveryStatus.SENT, 200, now_ms() - 10_000)], "me"
    )
    assert (await store.purge(now_ms(), 100)).removed >= 1
    assert [j.id for j in await due_jobs(store, [done.id, still_open.id])] == [still_open.id]


async def test_a_replica_records_only_what_it_still_holds(store: Store) -> None:
    sub, [delivery] = await recorded(store, "slow", 1)  # its lease runs out at once
    await asyncio.sleep(0.05)
    assert [j.id for j in await store.claim_due(Claim("fast", 10, 60_000))] == [delivery.id]
    # The slow replica's late outcome is refused: the delivery is the fast one's now.
    late = await store.record_attempts(
        [attempt(delivery, 1, DeliveryStatus.RETRYING, 500, now_ms())], "slow"
    )
    assert late.lost == {delivery.id}
    assert await store.renew([delivery.id], "slow", 60_000) == set()
    await store.release([delivery.id], "slow")
    assert await store.claim_due(Claim("third", 10, 60_000)) == []  # still the fast one's
    done = await store.record_attempts(
        [attempt(delivery, 1, DeliveryStatus.SENT, 200, now_ms())], "fast"
    )
    assert done.lost == frozenset()
    summary = (await store.subscription_summaries([sub.id]))[sub.id]
    assert summary.last_delivery is not None
    assert summary.last_delivery.status is DeliveryStatus.SENT


async def test_leases_are_timed_by_the_database_clock(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, [delivery] = await recorded(store, "a", 60_000)
    # A replica whose clock runs an hour fast still sees replica a's lease alive.
    monkeypatch.setattr(sql_base, "now_ms", lambda: now_ms() + 3_600_000)
    assert await store.claim_due(Claim("b", 10, 60_000)) == []
    assert await store.renew([delivery.id], "a", 60_000) == {delivery.id}
    assert await store.claim_due(Claim("b", 10, 60_000)) == []


async def test_the_owner_of_an_embedded_store_takes_back_every_lease(store: Store) -> None:
    await recorded(store, "crashed", 300_000, 3)
    assert await store.claim_due(Claim("restarted", 10, 60_000)) == []
    assert await store.take_back_leases() == 3
    assert len(await store.claim_due(Claim("restarted", 10, 60_000))) == 3


async def test_a_claimed_delivery_whose_event_is_gone_fails_instead_of_looping(
    store: Store, settings_for: Settings
) -> None:
    """On PostgreSQL a retention purge can delete an event while a replay commits a new
    delivery of it; such a delivery can never be sent, and must not be claimed forever."""
    sub = await store.create_subscription("org_a", "https://a.example/h", EVENTS, None)
    event = incoming()
    delivery = NewDelivery(ids.new_id("whd"), event.id, sub.id, event.event, "org_a")
    await store.record_events([event], [delivery], Lease("me", 60_000))
    await store.release([delivery.id], "me")
    await _raw_execute(settings_for, "DELETE FROM events WHERE id = $1", event.id)
    assert await store.claim_due(Claim("me", 10, 60_000)) == []
    assert await store.claim_due(Claim("me", 10, 60_000)) == []  # not leased again and again
    (row,) = (
        await store.list_deliveries("org_a", sub.id, DeliveryFilter(), PageRequest(10, None))
    ).rows
    assert row.status is DeliveryStatus.FAILED


async def test_a_claim_sends_the_sendable_and_ends_a_removed_payload_and_a_gone_event(
    store: Store, settings_for: Settings
) -> None:
    async def statuses() -> list[str]:
        return sorted(await column_values(settings_for.database_url, "deliveries", "status"))

    # A removed payload alone in its claim: cancelled, never handed out.
    _, [removed] = await recorded(store, "me", 60_000)
    await store.release([removed.id], "me")
    await _raw_execute(settings_for, "UPDATE events SET body = '' WHERE id = $1", removed.event_id)
    assert await store.claim_due(Claim("me", 10, 60_000)) == []
    assert await statuses() == ["cancelled"]
    # A gone event beside a sendable delivery: the one failed, the other handed out (and still
    # open, leased to the claimer).
    _, [gone, sendable] = await recorded(store, "me", 60_000, count=2)
    await store.release([gone.id, sendable.id], "me")
    await _raw_execute(settings_for, "DELETE FROM events WHERE id = $1", gone.event_id)
    assert [job.id for job in await store.claim_due(Claim("me", 10, 60_000))] == [sendable.id]
    assert await store.claim_due(Claim("me", 10, 60_000)) == []
    assert await statuses() == ["cancelled", "failed", "pending"]


async def test_an_index_opens_secrets_when_a_delivery_first_needs_them(
    store: Store, settings_for: Settings
) -> None:
    plain = await store.create_subscription("org_l", "https://a.example/h", EVENTS, None)
    lost = await store.create_subscription("org_l", "https://b.example/h", EVENTS, None)
    await seal_elsewhere(settings_for, lost.id)  # by a key no longer configured
    altered = await store.create_subscription("org_l", "https://c.example/h", EVENTS, None)
    # Sealed by the configured key, but for another row: only opening it can tell.
    await _raw_execute(
        settings_for,
        "UPDATE subscriptions SET secret_enc = (SELECT s.secret_enc FROM subscriptions s "
        f"WHERE s.id = '{plain.id}') WHERE id = $1",
        altered.id,
    )
    opened: list[str] = []
    open_subscription = store.open_subscription

    def noted(subscription: Subscription, sealed: Sealed) -> Subscription:
        opened.append(subscription.id)
        return open_subscription(subscription, sealed)

    store.open_subscription = noted  # type: ignore[method-assign]
    index = SubscriptionIndex(store)
    await index.refresh(force=True)
    assert opened == []  # the whole load opened nothing
    assert index.undecryptable() == (lost.id,)  # known from its prefix: parked from the start
    matched = index.match("org_l", EVENTS[0], now_ms() + 1, {}).wanted
    assert {s.id for s in matched} == {plain.id, lost.id, altered.id}  # recorded, all of them
    got = index.get(plain.id)
    assert got is not None
    assert got.secret == plain.secret
    assert index.get(plain.id) is got
    assert opened == [plain.id]  # once
    broken = index.get(altered.id)
    assert broken is not None
    assert broken.secret is None
    assert index.undecryptable() == tuple(sorted([lost.id, altered.id]))
    # A change takes the opened copy out with the old row.
    await store.update_subscription("org_l", plain.id, SubscriptionChanges(rate_limit=5))
    opened.clear()  # the update's own answer opened it
    await index.refresh()
    assert opened == []
    again = index.get(plain.id)
    assert again is not None
    assert (again.rate_limit, again.secret) == (5, plain.secret)
    assert opened == [plain.id]


async def test_the_pending_gauges_reads_are_bounded_or_estimated(
    store: Store, settings_for: Settings
) -> None:
    await recorded(store, "me", 60_000, count=30)
    assert await store.pending_at_most(10) == 10
    assert await store.pending_at_most(100) == 30
    await _raw_execute(settings_for, "ANALYZE")
    estimate = await store.pending_estimate()
    if settings_for.is_postgres:
        assert estimate is not None
        assert 15 <= estimate <= 60
    else:
        assert estimate is None  # SQLite's planner keeps no such figure


async def test_the_rolling_census_agrees_with_a_full_one(
    store: Store, settings_for: Settings
) -> None:
    _, old = await recorded(store, "me", 60_000, count=6)
    width = CENSUS_BUCKETS["events"]
    for n, delivery in enumerate(old):  # six buckets of the past
        await _raw_execute(
            settings_for,
            f"UPDATE events SET received_at = received_at - {(n + 1) * width} WHERE id = $1",
            delivery.event_id,
        )
    census = RollingCensus(store, budget=1)
    first = await census.take()
    assert first == await store.sealed_census()
    assert first.current >= 6
    await recorded(store, "me", 60_000, count=3)
    # The newest at once; a removal from the past when its bucket's turn comes.
    assert (await census.take()).current == first.current + 3 + 1  # and the new secret
    await _raw_execute(
        settings_for, "UPDATE events SET payload_removed_at = 1 WHERE id = $1", old[0].event_id
    )
    exact = await store.sealed_census()
    for _ in range(7):
        if await census.take() == exact:
            break
    else:
        raise AssertionError(f"not within a sweep: {await census.take()} vs {exact}")


async def _raw_execute(settings: Settings, sql: str, *args: str) -> None:
    if settings.is_postgres:
        conn = await asyncpg.connect(settings.database_url)
        try:
            await conn.execute(sql, *args)
        finally:
            await conn.close()
        return
    with sqlite3.connect(sqlite_path(settings.database_url)) as lite:
        lite.execute(sql.replace("$1", "?"), args)


async def test_changed_subscriptions_are_read_after_a_stamp_with_what_went(store: Store) -> None:
    first = await store.create_subscription("org_c", "https://a.example/h", EVENTS, None)
    everything = await store.changed_subscriptions(-1)
    assert first.id in {s.id for s in everything.live}
    stamp = everything.high

    # Nothing changed since: nothing to read.
    assert await store.changed_subscriptions(stamp) == ChangedSubscriptions([], [], stamp)

    second = await store.create_subscription("org_c", "https://a.example/h", EVENTS, None)
    await store.update_subscription(
        "org_c", first.id, SubscriptionChanges(events=("review.overridden",))
    )
    after_changes = await store.changed_subscriptions(stamp)
    # The create and then the change, in the order they committed; nobody else's rows.
    assert [s.id for s in after_changes.live] == [second.id, first.id]
    assert after_changes.live[1].events == ("review.overridden",)
    assert after_changes.gone == []
    assert after_changes.high > stamp

    # Paused, deleted, deactivated: read as gone, so every index drops them.
    await store.update_subscription("org_c", first.id, SubscriptionChanges(active=False))
    await store.delete_subscription("org_c", second.id)
    gone = await store.changed_subscriptions(after_changes.high)
    assert gone.live == []
    assert sorted(gone.gone) == sorted([first.id, second.id])
    third = await store.create_subscription("org_c", "https://a.example/h", EVENTS, None)
    await store.deactivate_subscription(third.id, "410 Gone")
    assert (await store.changed_subscriptions(gone.high)).gone == [third.id]


async def test_an_index_follows_another_replicas_changes_reading_only_them(
    store: Store, settings_for: Settings
) -> None:
    replica = await open_store(settings_for, run_migrations=False)
    try:
        index = SubscriptionIndex(replica)
        kept = await store.create_subscription("org_i", "https://a.example/h", EVENTS, None)
        await index.refresh(force=True)
        assert index.get(kept.id) is not None
        reads: list[int] = []
        changed = replica.changed_subscriptions

        async def noted(after: int) -> ChangedSubscriptions:
            got = await changed(after)
            reads.append(len(got.live) + len(got.gone))
            return got

        replica.changed_subscriptions = noted  # type: ignore[method-assign]
        assert await index.refresh() is False  # nothing moved: not even a read of changes
        new = await store.create_subscription("org_i", "https://b.example/h", EVENTS, None)
        await store.update_subscription(
            "org_i", kept.id, SubscriptionChanges(events=("review.overridden",))
        )
        assert await index.refresh() is True
        assert reads == [2]  # the two changed rows, not every subscription
        now = now_ms() + 1
        assert {s.id for s in index.match("org_i", EVENTS[0], now, {}).wanted} == {new.id}
        assert {s.id for s in index.match("org_i", "review.overridden", now, {}).wanted} == {
            kept.id
        }
        await store.delete_subscription("org_i", new.id)
        await index.refresh()
        assert index.get(new.id) is None
        assert index.match("org_i", EVENTS[0], now, {}) == ((), 0)
    finally:
        await replica.close()


async def test_the_hours_count_attempts_sent_failed_by_class_and_latency(store: Store) -> None:
    sub, [first, second, third] = await recorded(store, "me", 60_000, count=3)
    at = now_ms()
    timed_out = replace(
        attempt(third, 1, DeliveryStatus.RETRYING, None, at),
        result="timeout",
        duration_ms=10_000,
    )
    await store.record_attempts(
        [
            attempt(first, 1, DeliveryStatus.SENT, 200, at),
            attempt(second, 1, DeliveryStatus.RETRYING, 503, at),
            timed_out,
        ],
        "me",
    )
    hours = await store.subscription_hours(sub.id)
    assert len(hours) == 24
    assert [h.start for h in hours] == sorted({h.start for h in hours})
    last = hours[-1]
    assert last.start <= at < last.start + 3_600_000
    assert (last.attempts, last.sent, dict(last.failed)) == (3, 1, {"5xx": 1, "timeout": 1})
    assert last.p95_latency_ms is not None
    assert last.p95_latency_ms > 6_000  # the timeout's bucket
    assert all(h.attempts == 0 and h.p95_latency_ms is None for h in hours[:-1])


async def test_a_long_run_of_failures_is_announced_failing_by_the_timer_once(
    store: Store,
) -> None:
    """One failed attempt, its retry hours away: at the hour `failing` is announced by the
    timer (audited, sent to the watcher), once; an attempt after does not announce it again;
    the first success is `recovered`."""
    watcher = await store.create_subscription(
        "org_a", "https://w.example/h", ["webhook.subscription.failing"], None
    )
    sub, [delivery] = await recorded(store, "me", 60_000)
    t0 = now_ms() - 2 * 3_600_000
    failed = replace(attempt(delivery, 1, DeliveryStatus.RETRYING, 503, t0), next_attempt_at=t0)
    await store.record_attempts([failed], "me")
    assert await store.announce_failing(t0 + 3_599_000) == 0  # not an hour yet
    assert await store.announce_failing(t0 + 3_600_000) == 1
    assert await store.announce_failing(now_ms()) == 0  # once per run

    where = AuditFilter(subscription_id=sub.id, actions=("subscription.failing",))
    (entry,) = (await store.list_audit("org_a", where, PageRequest(10, None))).rows
    assert entry.actor.kind.value == "system"
    assert entry.changes["consecutiveFailures"] == 1
    assert entry.changes["lastStatusCode"] == 503
    told = await store.list_deliveries("org_a", watcher.id, DeliveryFilter(), PageRequest(10, None))
    assert [row.event for row in told.rows] == ["webhook.subscription.failing"]

    jobs = await store.claim_due(Claim("me", 10, 60_000))
    assert delivery.id in {job.id for job in jobs}
    again = attempt(delivery, 2, DeliveryStatus.RETRYING, 503, now_ms())
    await store.record_attempts([replace(again, next_attempt_at=now_ms())], "me")
    where = AuditFilter(
        subscription_id=sub.id, actions=("subscription.failing", "subscription.recovered")
    )
    assert len((await store.list_audit("org_a", where, PageRequest(10, None))).rows) == 1
    assert delivery.id in {job.id for job in await store.claim_due(Claim("me", 10, 60_000))}
    await store.record_attempts([attempt(delivery, 3, DeliveryStatus.SENT, 200, now_ms())], "me")
    rows = (await store.list_audit("org_a", where, PageRequest(10, None))).rows
    assert [entry.action for entry in rows] == ["subscription.recovered", "subscription.failing"]


async def test_a_batch_of_successes_costs_one_statement_and_still_clears_any_failure_clock(
    store: Store, settings_for: Settings
) -> None:
    sub, [first, failed, second, third] = await recorded(store, "me", 60_000, count=4)
    at = now_ms()
    # A healthy subscription: on PostgreSQL the outcome, its attempt and its counters are one
    # statement with no transaction; on SQLite one statement for the failure clocks of the
    # batch's subscriptions (not two per subscription) in the transaction.
    with counting(store) as trips:
        await store.record_attempts([attempt(first, 1, DeliveryStatus.SENT, 200, at)], "me")
    assert trips.round_trips == (1 if settings_for.is_postgres else 6), trips.statements
    # A failure (another replica's, say: the row is what counts) starts the clock; the next
    # success clears it, still in the one statement.
    await store.record_attempts([attempt(failed, 1, DeliveryStatus.RETRYING, 500, at)], "me")
    assert (await _failure_clock(store, sub.id)) == (at, 1, None)
    with counting(store) as trips:
        clocks = await store.record_attempts(
            [attempt(second, 1, DeliveryStatus.SENT, 200, at + 1)], "me"
        )
    assert clocks == Recorded({sub.id: None}, frozenset())
    assert (await _failure_clock(store, sub.id)) == (None, 0, None)
    assert trips.round_trips == (1 if settings_for.is_postgres else 7), trips.statements
    # An announced streak (a `failing` event sent): the success clears it in the transaction
    # that writes the `recovered` event.
    await _announce(store, sub.id, at)
    clocks = await store.record_attempts(
        [attempt(third, 1, DeliveryStatus.SENT, 200, at + 2)], "me"
    )
    assert clocks == Recorded({sub.id: None}, frozenset())
    assert (await _failure_clock(store, sub.id)) == (None, 0, None)
    entry = await store.get_delivery("org_a", sub.id, third.id)
    assert entry is not None
    assert entry.row.status is DeliveryStatus.SENT
    assert [a.response_code for a in entry.attempts] == [200]


async def _failure_clock(store: Store, subscription_id: str) -> tuple[int | None, int, int | None]:
    async with store._driver.connection() as conn:  # type: ignore[attr-defined]
        row = await conn.fetchrow(
            "SELECT failing_since, consecutive_failures, alerted_at FROM subscriptions "
            "WHERE id = $1",
            subscription_id,
        )
    assert row is not None
    return row["failing_since"], row["consecutive_failures"], row["alerted_at"]


async def _announce(store: Store, subscription_id: str, at: int) -> None:
    """The subscription's streak as another replica leaves it once `failing` is sent."""
    async with store._driver.transaction() as conn:  # type: ignore[attr-defined]
        await conn.execute(
            "UPDATE subscriptions SET failing_since = $2, consecutive_failures = 5, "
            "alerted_at = $2 WHERE id = $1",
            subscription_id,
            at,
        )


@pytest.mark.parametrize("ordered", [False, True], ids=["unordered", "ordered"])
async def test_a_write_matched_against_an_older_revision_writes_nothing(
    store: Store, ordered: bool
) -> None:
    sub = await store.create_subscription("org_a", "https://a.example/h", EVENTS, None)
    matched_at = await store.subscriptions_revision()
    await store.create_subscription("org_a", "https://b.example/h", EVENTS, None)
    event = incoming()
    delivery = NewDelivery(
        ids.new_id("whd"),
        event.id,
        sub.id,
        event.event,
        event.org_id,
        ordering_key="cus_1" if ordered else None,
    )
    lease = Lease("me", 60_000)
    behind = await store.record_matched([event], [delivery], lease, matched_at)
    assert behind == IndexBehind(matched_at + 1)
    assert await store.pending_count() == 0
    written = await store.record_matched([event], [delivery], lease, matched_at + 1)
    assert not isinstance(written, IndexBehind)
    assert [d.id for d in written] == [delivery.id]
    assert await store.pending_count() == 1
