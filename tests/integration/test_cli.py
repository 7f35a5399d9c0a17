"""The command line as people and scripts run it: `python -m service …` in a child process, with
the configuration in `WEBHOOKS_*` variables; and the demo receiver behind `make run`."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import orjson
import pytest
from pydantic import SecretStr

from service import ids
from service.clock import now_ms
from service.domain import (
    AttemptRecord,
    DeliveryFilter,
    DeliveryStatus,
    IncomingEvent,
    NewDelivery,
    OAuthClientCredentials,
    Subscription,
)
from service.events import format_time, parse_time
from service.samples import sample_event
from service.settings import load_settings
from service.signing import ALL_SCHEMES, Scheme, signature_headers
from service.store import Claim, Lease, PageRequest, Store, SubscriptionChanges, open_store
from service.store.migrate import head_revision
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support.commands import Result, run_module
from tests.support.store import attempt as store_attempt
from tools.demo_receiver import DEMO_PATH, VerifyingReceiver


async def run_cli(*args: str, env: Mapping[str, str], cwd: Path) -> Result:
    return await run_module("service", *args, env=env, cwd=cwd)


def refused(result: Result, code: int, message: str) -> None:
    """The command exited with `code` and said `message` on standard error."""
    assert result.code == code
    assert message in result.stderr


@dataclass(frozen=True)
class Database:
    url: str
    env: dict[str, str]


@pytest.fixture(params=["sqlite", "postgres"])
def cli_database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/cli.db"
        return Database(url, {"WEBHOOKS_DATABASE_URL": url})
    url = request.getfixturevalue("fresh_postgres_url")
    env = {"WEBHOOKS_DATABASE_URL": url, "WEBHOOKS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY}
    return Database(url, env)


@asynccontextmanager
async def opened(database: Database) -> AsyncIterator[Store]:
    """The store the CLI of `database.env` works on (SQLite: created and migrated if new)."""
    postgres = "postgres" in database.url
    settings = load_settings(
        database_url=database.url,
        encryption_key=SecretStr(TEST_ENCRYPTION_KEY) if postgres else None,
    )
    store = await open_store(settings, run_migrations=not postgres)
    try:
        yield store
    finally:
        await store.close()


async def org_for(database: Database, key: str) -> str | None:
    async with opened(database) as store:
        return await store.org_for_api_key(key)


# -- api-key ----------------------------------------------------------------------------------


async def test_api_key_create_list_revoke(cli_database: Database, tmp_path: Path) -> None:
    env = cli_database.env

    created = await run_cli(
        "api-key", "create", "--org", "org_cli", "--name", "ci", env=env, cwd=tmp_path
    )

    assert created.code == 0, created.stderr
    key = created.stdout.splitlines()[-1]
    assert re.fullmatch(r"qe_key_[A-Za-z0-9_-]{20,}", key)
    assert key not in created.stderr
    assert await org_for(cli_database, key) == "org_cli"
    key_id = re.search(r"key_[0-9A-Z]{26}", created.stderr)
    assert key_id is not None, created.stderr

    listed = await run_cli("api-key", "list", env=env, cwd=tmp_path)

    assert listed.code == 0, listed.stderr
    assert key not in listed.stdout + listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["ID", "ORG", "NAME", "PREFIX", "CREATED", "REVOKED"]
    cells = row.split()
    assert cells[:3] == [key_id.group(), "org_cli", "ci"]
    assert cells[3] == key[:11] + "…"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", cells[4])
    assert cells[5] == "-"

    revoked = await run_cli("api-key", "revoke", key_id.group(), env=env, cwd=tmp_path)

    assert revoked.code == 0, revoked.stderr
    assert await org_for(cli_database, key) is None
    again = await run_cli("api-key", "revoke", key_id.group(), env=env, cwd=tmp_path)
    refused(again, 1, "no active API key")
    unknown = await run_cli("api-key", "revoke", "key_nope", env=env, cwd=tmp_path)
    assert unknown.code == 1
    relisted = await run_cli("api-key", "list", env=env, cwd=tmp_path)
    assert relisted.stdout.splitlines()[1].split()[5].endswith("Z")


async def test_the_key_is_the_last_line_even_for_a_script(tmp_path: Path) -> None:
    env = {"WEBHOOKS_DATABASE_URL": f"sqlite:///{tmp_path}/keys.db"}

    first = await run_cli("api-key", "create", "--org", "org_a", env=env, cwd=tmp_path)
    second = await run_cli("api-key", "create", "--org", "org_b", env=env, cwd=tmp_path)

    keys = [first.stdout.splitlines()[-1], second.stdout.splitlines()[-1]]
    assert keys[0] != keys[1]
    assert all(k.startswith("qe_key_") for k in keys)


async def test_api_key_needs_an_org(tmp_path: Path) -> None:
    env = {"WEBHOOKS_DATABASE_URL": f"sqlite:///{tmp_path}/keys.db"}

    result = await run_cli("api-key", "create", env=env, cwd=tmp_path)

    refused(result, 2, "--org")


# -- the delivery log and recovery ------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    subscription: Subscription
    failed: list[str]  # oldest event first
    sent: str
    pending: str
    unsent_event: str  # an event of the org the subscription never had a delivery of
    envelopes: dict[str, dict[str, object]]  # by delivery id
    occurred: dict[str, int]  # each delivery's event's time, epoch ms


async def seed(store: Store, org: str = "org_cli") -> Seeded:
    """A subscription with four deliveries of events one minute apart (failed, failed, sent,
    pending) and one more event of the org it has no delivery of."""
    subscription = await store.create_subscription(
        org, "https://receiver.example/hook", ["verification.created"], None
    )
    start = now_ms() - 5 * 60_000
    events, envelopes = [], []
    for i in range(5):
        at = start + i * 60_000
        envelope = sample_event("verification.created", org, datetime.fromtimestamp(at / 1000, UTC))
        envelopes.append(envelope)
        events.append(
            IncomingEvent(
                id=str(envelope["id"]),
                org_id=org,
                event="verification.created",
                occurred_at=at,
                body=orjson.dumps(envelope),
                sibling_service=None,
                source="t/0/1",
            )
        )
    deliveries = [
        NewDelivery(ids.new_id(ids.DELIVERY), e.id, subscription.id, e.event, org)
        for e in events[:4]
    ]
    assert len(await store.record_events(events, deliveries, Lease("seed", 60_000))) == 4
    outcomes = [(DeliveryStatus.FAILED, 500), (DeliveryStatus.FAILED, 500)]
    outcomes.append((DeliveryStatus.SENT, 200))
    await store.record_attempts(
        [
            AttemptRecord(
                delivery_id=d.id,
                subscription_id=subscription.id,
                number=1,
                started_at=now_ms(),
                duration_ms=12,
                status_code=code,
                result="2xx" if code == 200 else "5xx",
                error=None if code == 200 else "HTTP 500",
                response_excerpt="ok" if code == 200 else "boom",
                new_status=status,
                next_attempt_at=None,
            )
            for d, (status, code) in zip(deliveries, outcomes, strict=False)
        ],
        "seed",
    )
    await store.release([deliveries[3].id], "seed")
    return Seeded(
        subscription=subscription,
        failed=[deliveries[0].id, deliveries[1].id],
        sent=deliveries[2].id,
        pending=deliveries[3].id,
        unsent_event=events[4].id,
        envelopes={d.id: envelopes[i] for i, d in enumerate(deliveries)},
        occurred={d.id: events[i].occurred_at for i, d in enumerate(deliveries)},
    )


async def seeded(database: Database) -> Seeded:
    async with opened(database) as store:
        return await seed(store)


@dataclass(frozen=True)
class SeededCli:
    """The CLI over a seeded database, run in a temporary folder."""

    database: Database
    data: Seeded
    cwd: Path

    @property
    def sid(self) -> str:
        return self.data.subscription.id

    async def run(self, *args: str) -> Result:
        return await run_cli(*args, env=self.database.env, cwd=self.cwd)


@pytest.fixture
async def cli(cli_database: Database, tmp_path: Path) -> SeededCli:
    return SeededCli(cli_database, await seeded(cli_database), tmp_path)


async def status_of(database: Database, seeded: Seeded, delivery_id: str) -> DeliveryStatus:
    async with opened(database) as store:
        detail = await store.get_delivery("org_cli", seeded.subscription.id, delivery_id)
    assert detail is not None
    return detail.row.status


async def test_deliveries_list_pages_filters_and_shows(cli: SeededCli) -> None:
    data = cli.data
    table = await cli.run("deliveries", "list", cli.sid, "--org", "org_cli")

    assert table.code == 0, table.stderr
    header, *lines = table.stdout.splitlines()
    assert header.split() == ["ID", "EVENT", "STATUS", "CREATED", "ATTEMPTS", "NEXT", "LAST"]
    rows = {line.split()[0]: line.split() for line in lines}
    assert set(rows) == {*data.failed, data.sent, data.pending}
    assert rows[data.failed[0]][2:] == [
        "failed",
        rows[data.failed[0]][3],
        "1",
        "-",
        "HTTP",
        "500",
    ]
    assert rows[data.sent][2] == "sent"
    assert rows[data.sent][-1] == "200"
    assert rows[data.pending][2] == "pending"
    assert rows[data.pending][-1] == "-"
    assert "--cursor" not in table.stderr

    # Without --org: found in whichever org holds it; the API's JSON shape.
    failed = await cli.run("deliveries", "list", cli.sid, "--status", "failed", "--json")

    assert failed.code == 0, failed.stderr
    listed = orjson.loads(failed.stdout)
    assert listed["nextCursor"] is None
    assert {row["id"] for row in listed["rows"]} == set(data.failed)
    assert all(row["lastAttempt"]["responseCode"] == 500 for row in listed["rows"])
    assert all(row["status"] == "failed" for row in listed["rows"])

    first = await cli.run("deliveries", "list", cli.sid, "--limit", "3")
    cursor = re.search(r"--cursor (\S+)", first.stderr)
    assert cursor is not None, first.stderr
    rest = await cli.run(
        "deliveries",
        "list",
        cli.sid,
        "--limit",
        "3",
        "--cursor",
        cursor.group(1),
        "--json",
    )
    assert rest.code == 0, rest.stderr
    page_one = [line.split()[0] for line in first.stdout.splitlines()[1:]]
    page_two = [row["id"] for row in orjson.loads(rest.stdout)["rows"]]
    assert len(page_one) == 3
    assert sorted(page_one + page_two) == sorted(rows)

    shown = await cli.run("deliveries", "show", cli.sid, data.failed[0])

    assert shown.code == 0, shown.stderr
    envelope = data.envelopes[data.failed[0]]
    assert f"verification.created {envelope['id']}" in shown.stdout
    assert re.search(r"^attempt 1: +\S+Z  HTTP 500  12 ms$", shown.stdout, re.M)
    assert "'boom'" in shown.stdout
    payload = shown.stdout.split("payload:\n", 1)[1]
    assert orjson.loads(payload) == envelope

    as_json = await cli.run("deliveries", "show", cli.sid, data.sent, "--org", "org_cli", "--json")
    detail = orjson.loads(as_json.stdout)
    assert detail["payload"] == data.envelopes[data.sent]
    assert [(a["number"], a["responseCode"], a["responseExcerpt"]) for a in detail["attempts"]] == [
        (1, 200, "ok")
    ]


async def test_subscriptions_show_hides_sensitive_values_and_the_log_follows_data_fields(
    cli: SeededCli,
) -> None:
    secrets = ("Bearer s3cr3t-cli", "k3y-cli-1")
    headers = {"X-Tenant": "acme", "Authorization": secrets[0], "X-Api-Key": secrets[1]}
    async with opened(cli.database) as store:
        await store.update_subscription(
            "org_cli",
            cli.sid,
            SubscriptionChanges(headers=headers, data_fields=("status", "customerId")),
        )

    shown = await cli.run("subscriptions", "show", cli.sid, "--org", "org_cli")
    assert shown.code == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["subscription:", cli.sid]
    assert "header:        X-Tenant: acme" in lines
    assert "header:        Authorization: (value hidden, write-only)" in lines
    assert "header:        X-Api-Key: (value hidden, write-only)" in lines
    assert "data fields:   status, customerId" in lines
    as_json = await cli.run("subscriptions", "show", cli.sid, "--json")
    assert as_json.code == 0, as_json.stderr
    row = orjson.loads(as_json.stdout)
    assert (row["headers"], row["sensitiveHeaders"], row["dataFields"]) == (
        {"X-Tenant": "acme"},
        ["Authorization", "X-Api-Key"],
        ["status", "customerId"],
    )
    for result in (shown, as_json):
        for value in secrets:
            assert value not in result.stdout + result.stderr

    # The log's payload is what is sent under the current list: data in the event's order.
    detail = await cli.run("deliveries", "show", cli.sid, cli.data.sent, "--json")
    assert detail.code == 0, detail.stderr
    envelope = cli.data.envelopes[cli.data.sent]
    data = envelope["data"]
    assert isinstance(data, dict)
    assert orjson.loads(detail.stdout)["payload"] == {
        **envelope,
        "data": {"customerId": data["customerId"], "status": data["status"]},
    }
    unknown = await cli.run("subscriptions", "show", "whk_00000000000000000000000000")
    refused(unknown, 1, "no subscription whk_00000000000000000000000000")


@pytest.mark.parametrize("cli_database", ["sqlite"], indirect=True)  # the store's part: both
async def test_subscriptions_filter_sets_refuses_and_clears(cli: SeededCli) -> None:
    low = '{"data": {"score": {"$lt": 60}}}'
    done = await cli.run("subscriptions", "filter", cli.sid, "--set", low)
    assert (done.code, done.stdout) == (0, '{"data":{"score":{"$lt":60}}}\n'), done.stderr
    show = await cli.run("subscriptions", "show", cli.sid)
    assert 'filter:        {"data":{"score":{"$lt":60}}}' in show.stdout.splitlines()
    bad = await cli.run(
        "subscriptions", "filter", cli.sid, "--set", '{"data": {"score": {"$lt": "x"}}}'
    )
    refused(bad, 2, "--set.data.score.$lt: takes a number or an RFC 3339 timestamp")
    async with opened(cli.database) as store:
        kept = await store.find_subscription(cli.sid)
    assert kept is not None
    assert kept.filter == '{"data":{"score":{"$lt":60}}}'
    cleared = await cli.run("subscriptions", "filter", cli.sid, "--clear")
    assert (cleared.code, cleared.stdout) == (0, "null\n"), cleared.stderr


async def test_deliveries_refuses_bad_input_and_unknown_ids(cli: SeededCli) -> None:
    bad = await cli.run(
        "deliveries",
        "list",
        cli.sid,
        "--status",
        "lost",
        "--limit",
        "0",
        "--since",
        "yesterday",
    )
    malformed = await cli.run("deliveries", "list", "whk_nope")
    other_org = await cli.run("deliveries", "list", cli.sid, "--org", "org_other")
    unknown = await cli.run("deliveries", "show", cli.sid, ids.new_id(ids.DELIVERY))

    assert bad.code == 2
    (line,) = bad.stderr.splitlines()
    assert line.startswith("identity-webhooks deliveries list: ")
    for option in ("--status: must be one of", "--limit: must be a whole number", "--since: "):
        assert option in line
    refused(malformed, 2, "'whk_nope' is not a subscription id")
    assert other_org.code == 1
    assert other_org.stderr.strip().endswith(f"no subscription {cli.sid} in org_other")
    refused(unknown, 1, "no delivery whd_")
    for result in (bad, malformed, other_org, unknown):
        assert "Traceback" not in result.stderr
        assert result.stdout == ""


async def test_redeliver_makes_a_finished_delivery_due_again(cli: SeededCli) -> None:
    before = now_ms()

    result = await cli.run("redeliver", cli.sid, cli.data.failed[0], "--org", "org_cli")

    assert result.code == 0, result.stderr
    assert result.stdout.startswith(f"{cli.data.failed[0]} is due now")
    async with opened(cli.database) as store:
        detail = await store.get_delivery("org_cli", cli.sid, cli.data.failed[0])
        jobs = await store.claim_due(Claim("claimer", 10, 60_000))
    assert detail is not None
    assert detail.row.status is DeliveryStatus.PENDING
    assert detail.row.next_attempt_at is not None
    assert before - 1000 <= detail.row.next_attempt_at <= now_ms()
    # What a running service's claimer does next: the redelivered one is due, the other
    # failed one is not.
    assert cli.data.failed[0] in {job.id for job in jobs}
    assert cli.data.failed[1] not in {job.id for job in jobs}


async def test_redeliver_refuses_unknown_deliveries_and_inactive_subscriptions(
    cli: SeededCli,
) -> None:
    unknown = await cli.run("redeliver", cli.sid, ids.new_id(ids.DELIVERY))
    malformed = await cli.run("redeliver", cli.sid, "whd_x")
    async with opened(cli.database) as store:
        await store.update_subscription("org_cli", cli.sid, SubscriptionChanges(active=False))
    inactive = await cli.run("redeliver", cli.sid, cli.data.failed[1])

    refused(unknown, 1, "no delivery whd_")
    refused(malformed, 2, "not a delivery id")
    refused(inactive, 1, "cannot redeliver: the subscription is inactive")
    assert "Traceback" not in unknown.stderr + malformed.stderr + inactive.stderr
    assert await status_of(cli.database, cli.data, cli.data.failed[1]) is DeliveryStatus.FAILED


async def test_replay_in_bounded_calls_then_everything(cli: SeededCli) -> None:
    first = await cli.run("replay", cli.sid, "--since", "10m", "--limit", "1")

    assert first.code == 0, first.stderr
    queued, cut = first.stdout.splitlines()
    assert queued.startswith(f"queued 1 failed deliveries of {cli.sid} from ")
    since = cut.removeprefix("cut short at 1: run again with --since ")
    assert parse_time(since) == datetime.fromtimestamp(
        cli.data.occurred[cli.data.failed[1]] / 1000, UTC
    )
    assert await status_of(cli.database, cli.data, cli.data.failed[0]) is DeliveryStatus.PENDING
    assert await status_of(cli.database, cli.data, cli.data.failed[1]) is DeliveryStatus.FAILED

    rest = await cli.run("replay", cli.sid, "--org", "org_cli", "--since", since)

    assert rest.code == 0, rest.stderr
    (line,) = rest.stdout.splitlines()
    assert line.startswith("queued 1 failed deliveries")
    assert await status_of(cli.database, cli.data, cli.data.failed[1]) is DeliveryStatus.PENDING

    until = format_time(datetime.now(UTC) + timedelta(seconds=1))
    everything = await cli.run(
        "replay",
        cli.sid,
        "--since",
        "10m",
        "--until",
        until,
        "--event",
        "verification.created",
        "--all",
        "--json",
    )

    assert everything.code == 0, everything.stderr
    # The sent one and the event it never had; the open ones are left alone.
    assert orjson.loads(everything.stdout) == {
        "count": 2,
        "nextSince": None,
        "withoutPayload": 0,
        "filtered": 0,
    }
    assert await status_of(cli.database, cli.data, cli.data.sent) is DeliveryStatus.PENDING
    async with opened(cli.database) as store:
        page = await store.list_deliveries(
            "org_cli", cli.sid, DeliveryFilter(), PageRequest(10, None)
        )
    assert cli.data.unsent_event in {row.event_id for row in page.rows}


async def test_replay_refuses_a_window_outside_the_retention_and_other_events(
    cli: SeededCli,
) -> None:
    too_old = await cli.run("replay", cli.sid, "--since", "31d")
    not_its = await cli.run("replay", cli.sid, "--since", "1h", "--event", "review.overridden")
    backwards = await cli.run("replay", cli.sid, "--since", "1h", "--until", "2h")
    none = await cli.run("replay", cli.sid, "--since", "1h", "--limit", "0")
    unknown = await cli.run("replay", ids.new_id(ids.SUBSCRIPTION), "--since", "1h")

    refused(too_old, 2, "--since: is before the retention (events are kept from ")
    refused(not_its, 2, "--event: the subscription does not receive review.overridden")
    refused(backwards, 2, "--until: must be after since")
    refused(none, 2, "--limit: must be from 1 to 10000")
    refused(unknown, 1, "no subscription whk_")
    for result in (too_old, not_its, backwards, none, unknown):
        assert result.stdout == ""
        assert "Traceback" not in result.stderr
    assert await status_of(cli.database, cli.data, cli.data.failed[0]) is DeliveryStatus.FAILED


async def test_rotate_secret_prints_the_new_secret_last(cli: SeededCli) -> None:
    old = cli.data.subscription.secret
    before = now_ms()

    result = await cli.run("rotate-secret", cli.sid, "--overlap", "2h")

    assert result.code == 0, result.stderr
    secret = result.stdout.splitlines()[-1]
    assert re.fullmatch(r"qe_whsec_[0-9a-f]{64}", secret), secret
    assert secret != old
    assert secret not in result.stderr
    async with opened(cli.database) as store:
        rotated = await store.get_subscription("org_cli", cli.sid)
    assert rotated is not None
    assert rotated.secret == secret
    assert rotated.previous_secret == old
    assert rotated.previous_secret_until is not None
    assert before + 7_200_000 <= rotated.previous_secret_until <= now_ms() + 7_200_000
    expiry = datetime.fromtimestamp(rotated.previous_secret_until / 1000, UTC)
    assert f"signs too until {format_time(expiry)}" in result.stderr


async def test_rotate_secret_refuses_a_long_overlap_and_another_org(cli: SeededCli) -> None:
    too_long = await cli.run("rotate-secret", cli.sid, "--overlap", "8d")
    not_a_duration = await cli.run("rotate-secret", cli.sid, "--overlap", "soon")
    other_org = await cli.run("rotate-secret", cli.sid, "--org", "org_other")

    refused(too_long, 2, "--overlap: ")
    assert "604800" in too_long.stderr
    refused(not_a_duration, 2, "'soon' is not a duration")
    assert other_org.code == 1
    for result in (too_long, not_a_duration, other_org):
        assert result.stdout == ""
        assert "Traceback" not in result.stderr
    async with opened(cli.database) as store:
        unchanged = await store.get_subscription("org_cli", cli.sid)
    assert unchanged is not None
    assert unchanged.secret == cli.data.subscription.secret
    assert unchanged.previous_secret is None


async def test_a_recovery_command_says_in_one_line_when_the_database_is_away(
    tmp_path: Path,
) -> None:
    env = {
        "WEBHOOKS_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/webhooks",
        "WEBHOOKS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
    }

    result = await run_cli("redeliver", ids.new_id("whk"), ids.new_id("whd"), env=env, cwd=tmp_path)

    assert result.code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("identity-webhooks redeliver: the database is away: ")


async def test_api_key_commands_say_in_one_line_when_the_database_is_away(
    tmp_path: Path,
) -> None:
    env = {
        "WEBHOOKS_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/webhooks",
        "WEBHOOKS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
    }

    result = await run_cli("api-key", "list", env=env, cwd=tmp_path)

    assert result.code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("identity-webhooks api-key list: the database is away: ")


# -- erase ------------------------------------------------------------------------------------

CUSTOMER = "cus cli/ø"


async def about(store: Store, subscription: Subscription, customer: str, *, sent: bool) -> str:
    """A delivery to `subscription` of a new event about `customer`, sent or left open; its
    id."""
    org = subscription.org_id
    envelope = sample_event("verification.created", org, datetime.now(UTC))
    envelope["data"]["customerId"] = customer
    event = IncomingEvent(
        id=str(envelope["id"]),
        org_id=org,
        event="verification.created",
        occurred_at=now_ms(),
        body=orjson.dumps(envelope),
        sibling_service=None,
        source="t/0/1",
        customer_id=customer,
    )
    delivery = NewDelivery(ids.new_id(ids.DELIVERY), event.id, subscription.id, event.event, org)
    await store.record_events([event], [delivery], Lease("seed", 60_000))
    if not sent:
        await store.release([delivery.id], "seed")
        return delivery.id
    attempt = store_attempt(delivery, 1, DeliveryStatus.SENT, 200, now_ms())
    await store.record_attempts([attempt], "seed")
    return delivery.id


async def test_erase_counts_in_a_dry_run_then_erases_one_orgs_customer(
    cli_database: Database, tmp_path: Path
) -> None:
    async with opened(cli_database) as store:
        mine = await store.create_subscription(
            "org_cli", "https://receiver.example/hook", ["verification.created"], None
        )
        theirs = await store.create_subscription(
            "org_other", "https://receiver.example/hook", ["verification.created"], None
        )
        sent = await about(store, mine, CUSTOMER, sent=True)
        open_one = await about(store, mine, CUSTOMER, sent=False)
        someone_else = await about(store, mine, "cus_kept", sent=True)
        other_org = await about(store, theirs, CUSTOMER, sent=True)

    async def run(*args: str) -> Result:
        return await run_cli("erase", *args, env=cli_database.env, cwd=tmp_path)

    async def payloads() -> dict[str, bool]:
        async with opened(cli_database) as store:
            found = {
                d: await store.get_delivery(s.org_id, s.id, d)
                for s, d in ((mine, sent), (mine, open_one), (mine, someone_else))
            }
            found[other_org] = await store.get_delivery("org_other", theirs.id, other_org)
        return {d: entry is not None and entry.payload is not None for d, entry in found.items()}

    dry = await run("--org", "org_cli", CUSTOMER, "--dry-run")

    assert dry.code == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        "dry run, nothing erased: in org_cli the payloads of 2 events about this customer and "
        "the response excerpts of their 2 deliveries would be removed; 1 open delivery would "
        "be cancelled"
    ]
    assert "ø" not in dry.stdout + dry.stderr
    assert set((await payloads()).values()) == {True}
    assert await status_of_delivery(cli_database, mine, open_one) is DeliveryStatus.PENDING

    erased = await run("--org", "org_cli", CUSTOMER, "--json")

    assert erased.code == 0, erased.stderr
    receipt = orjson.loads(erased.stdout)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", receipt.pop("erasedAt"))
    assert receipt == {
        "customerId": CUSTOMER,
        "events": 2,
        "deliveries": 2,
        "cancelled": 1,
        "dryRun": False,
    }
    assert await payloads() == {sent: False, open_one: False, someone_else: True, other_org: True}
    assert await status_of_delivery(cli_database, mine, open_one) is DeliveryStatus.CANCELLED

    again = await run("--org", "org_cli", "--", CUSTOMER)
    nobody = await run("--org", "org_cli", "cus_nobody")

    assert again.code == 0, again.stderr
    (line,) = again.stdout.splitlines()
    assert re.fullmatch(
        r"erased in org_cli at \S+Z: the payloads of 2 events about this customer and the "
        r"response excerpts of their 2 deliveries; 0 open deliveries cancelled",
        line,
    )
    assert "ø" not in again.stdout + again.stderr
    assert nobody.stdout == "no retained event about this customer in org_cli: nothing to erase\n"

    # Its log says why there is no payload, and lists the cancelled one with its reason.
    shown = await run_cli("deliveries", "show", mine.id, sent, env=cli_database.env, cwd=tmp_path)
    assert shown.code == 0, shown.stderr
    assert re.search(
        r"^payload: +none: its payload was erased at the customer's request \(since \S+Z\)$",
        shown.stdout,
        re.MULTILINE,
    ), shown.stdout
    cancelled = await run_cli(
        "deliveries",
        "list",
        mine.id,
        "--status",
        "cancelled",
        "--json",
        env=cli_database.env,
        cwd=tmp_path,
    )
    assert cancelled.code == 0, cancelled.stderr
    assert [row["id"] for row in orjson.loads(cancelled.stdout)["rows"]] == [open_one]
    assert orjson.loads(cancelled.stdout)["rows"][0]["cancelledReason"].startswith(
        "its payload was removed"
    )

    # An erased delivery cannot be sent again: said in one line.
    redelivered = await run_cli("redeliver", mine.id, sent, env=cli_database.env, cwd=tmp_path)
    refused(redelivered, 1, "cannot be sent again: its payload was erased at the customer's")
    assert "Traceback" not in redelivered.stderr
    # A replay leaves the erased event out, and says so.
    replayed = await run_cli(
        "replay", mine.id, "--since", "10m", "--all", env=cli_database.env, cwd=tmp_path
    )

    assert replayed.code == 0, replayed.stderr
    queued, left_out = replayed.stdout.splitlines()
    assert queued.startswith(f"queued 1 deliveries of {mine.id} from ")
    assert left_out == (
        "left out 1 events whose payloads are no longer kept (erased, or past "
        "WEBHOOKS_PAYLOAD_RETENTION)"
    )
    # The kept one is open now, left alone: the window holds only what cannot be sent again.
    nothing = await run_cli(
        "replay", mine.id, "--since", "10m", "--all", "--json", env=cli_database.env, cwd=tmp_path
    )
    refused(nothing, 1, "the 1 events in the window cannot be sent again: their payloads are")
    assert nothing.stdout == ""
    assert "Traceback" not in nothing.stderr


async def status_of_delivery(
    database: Database, subscription: Subscription, delivery_id: str
) -> DeliveryStatus:
    async with opened(database) as store:
        detail = await store.get_delivery(subscription.org_id, subscription.id, delivery_id)
    assert detail is not None
    return detail.row.status


async def test_erase_refuses_what_is_not_a_customer_id(tmp_path: Path) -> None:
    env = {"WEBHOOKS_DATABASE_URL": f"sqlite:///{tmp_path}/erase.db"}

    async def run(*args: str) -> Result:
        return await run_cli("erase", *args, env=env, cwd=tmp_path)

    empty = await run("--org", "org_cli", "")
    long = await run("--org", "org_cli", "c" * 201)
    control = await run("--org", "org_cli", "cus\x1b[31m")
    no_org = await run("cus_1")
    dash = await run("--org", "org_cli", "-cus")
    after_dashes = await run("--org", "org_cli", "--", "-cus")

    refused(empty, 2, "identity-webhooks erase: CUSTOMER_ID: must not be empty")
    refused(long, 2, "CUSTOMER_ID: must be at most 200 characters")
    refused(control, 2, "CUSTOMER_ID: must not hold control characters")
    refused(no_org, 2, "--org")
    assert dash.code == 2
    assert after_dashes.code == 0, after_dashes.stderr
    for result in (empty, long, control, no_org, dash):
        assert result.stdout == ""
        assert "Traceback" not in result.stderr


# -- migrate ----------------------------------------------------------------------------------


async def test_migrate_is_idempotent(cli_database: Database, tmp_path: Path) -> None:
    head = head_revision()

    first = await run_cli("migrate", env=cli_database.env, cwd=tmp_path)
    second = await run_cli("migrate", env=cli_database.env, cwd=tmp_path)

    assert first.code == 0, first.stderr
    assert first.stdout.startswith(f"schema at revision {head} (was ")
    if cli_database.url.startswith("sqlite"):
        assert first.stdout.strip() == f"schema at revision {head} (was none)"
    assert second.code == 0, second.stderr
    assert second.stdout.strip() == f"schema at revision {head} (was {head})"


# -- rekey ------------------------------------------------------------------------------------
# Rotation, rows in clear and the undecryptable: tests/integration/test_rekey.py.


async def test_rekey_refuses_a_bad_batch_and_says_in_one_line_when_the_database_is_away(
    tmp_path: Path,
) -> None:
    away = {
        "WEBHOOKS_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/webhooks",
        "WEBHOOKS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
    }
    embedded = {"WEBHOOKS_DATABASE_URL": f"sqlite:///{tmp_path}/rekey.db"}

    bad, unreachable = await asyncio.gather(
        run_cli("rekey", "--batch", "0", env=embedded, cwd=tmp_path),
        run_cli("rekey", "--status", env=away, cwd=tmp_path),
    )

    refused(bad, 2, "--batch: '0' is not a whole number from 1 to 10000")
    assert unreachable.code == 1
    (line,) = unreachable.stderr.splitlines()
    assert line.startswith("identity-webhooks rekey: the database is away: ")


# -- the demo receiver ------------------------------------------------------------------------


@dataclass
class DemoReceiver:
    url: str
    secret_file: Path
    lines: list[str]


@pytest.fixture
async def demo_receiver(tmp_path: Path) -> AsyncIterator[DemoReceiver]:
    secret_file = tmp_path / "secret"
    secret_file.write_text("")
    lines: list[str] = []
    async with VerifyingReceiver(secret_file=secret_file, emit=lines.append).serving() as receiver:
        yield DemoReceiver(receiver.base + DEMO_PATH, secret_file, lines)


SECRET = "qe_whsec_demo0123456789abcdef"


def delivery(
    secret: str = SECRET, schemes: Sequence[Scheme] = ALL_SCHEMES
) -> tuple[bytes, dict[str, str]]:
    envelope = sample_event("verification.created", "org_demo", datetime.now(UTC))
    body = orjson.dumps(envelope)
    headers = {
        "Content-Type": "application/json",
        "X-Identity-Event": "verification.created",
        "X-Identity-Delivery": "whd_01JD2Y8Q0S6M2X0YV1X4J5T7ZK",
        "X-Sibling-Service": "orchestration",
        **signature_headers(schemes, [secret], body, int(time.time()), "whd_0CL1"),
    }
    return body, headers


async def post(url: str, body: bytes, headers: Mapping[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as r,
    ):
        return r.status


async def test_demo_receiver_accepts_a_signed_delivery_and_prints_one_line(
    demo_receiver: DemoReceiver,
) -> None:
    demo_receiver.secret_file.write_text(SECRET + "\n")
    body, headers = delivery()

    status = await post(demo_receiver.url, body, headers)

    assert status == 204
    (line,) = demo_receiver.lines
    envelope = orjson.loads(body)
    assert "verification.created" in line
    assert "whd_01JD2Y8Q0S6M2X0YV1X4J5T7ZK" in line
    assert envelope["id"] in line
    assert "org_demo" in line
    assert "legacy ✓ quantum ✓" in line
    assert "sibling=orchestration" in line
    assert line.endswith("→ 204")
    assert envelope["data"]["customerId"] not in line
    assert "ktp_capture" not in line
    assert SECRET not in line
    assert "\n" not in line


async def test_demo_receiver_rejects_a_tampered_body(demo_receiver: DemoReceiver) -> None:
    demo_receiver.secret_file.write_text(SECRET)
    body, headers = delivery()
    tampered = body.replace(b'"score":87', b'"score":99')
    assert tampered != body

    status = await post(demo_receiver.url, tampered, headers)

    assert status == 401
    (line,) = demo_receiver.lines
    assert "legacy ✗" in line
    assert "quantum ✗" in line
    assert line.endswith("→ 401")


async def test_demo_receiver_rejects_another_secret_and_no_signature(
    demo_receiver: DemoReceiver,
) -> None:
    demo_receiver.secret_file.write_text(SECRET)
    body, headers = delivery(secret="qe_whsec_someone_else")
    unsigned = {k: v for k, v in headers.items() if "Signature" not in k}

    assert await post(demo_receiver.url, body, headers) == 401
    assert await post(demo_receiver.url, body, unsigned) == 401
    assert "legacy - quantum -" in demo_receiver.lines[-1]


async def test_demo_receiver_checks_whichever_headers_come(demo_receiver: DemoReceiver) -> None:
    demo_receiver.secret_file.write_text(SECRET)

    for scheme in (Scheme.QUANTUM, Scheme.LEGACY):
        body, headers = delivery(schemes=[scheme])
        assert await post(demo_receiver.url, body, headers) == 204
    assert "legacy - quantum ✓" in demo_receiver.lines[0]
    assert "legacy ✓ quantum -" in demo_receiver.lines[1]


async def test_demo_receiver_waits_for_its_secret_and_picks_up_a_new_one(
    demo_receiver: DemoReceiver,
) -> None:
    body, headers = delivery()
    assert await post(demo_receiver.url, body, headers) == 503

    demo_receiver.secret_file.write_text(SECRET)
    assert await post(demo_receiver.url, body, headers) == 204

    demo_receiver.secret_file.write_text("qe_whsec_rotated_to_a_new_subscription")
    assert await post(demo_receiver.url, body, headers) == 401
    body, headers = delivery(secret="qe_whsec_rotated_to_a_new_subscription")
    assert await post(demo_receiver.url, body, headers) == 204


async def test_demo_receiver_command_writes_its_url_and_stops_on_sigterm(tmp_path: Path) -> None:
    secret_file, url_file = tmp_path / "secret", tmp_path / "receiver.url"
    secret_file.write_text(SECRET)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tools.demo_receiver",
        "--secret-file",
        str(secret_file),
        "--url-file",
        str(url_file),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            while not url_file.exists():
                await asyncio.sleep(0.05)
            url = url_file.read_text().strip()
            assert (await process.stdout.readline()).decode().startswith("demo receiver listening")
            body, headers = delivery()
            assert await post(url, body, headers) == 204
            line = (await process.stdout.readline()).decode()
        assert "legacy ✓ quantum ✓" in line
        assert orjson.loads(body)["data"]["customerId"] not in line
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
        await process.communicate()
    assert code == 0


async def test_subscriptions_show_names_the_endpoint_auth_without_its_secret(
    cli: SeededCli,
) -> None:
    secret = "cs-cli-" + "7" * 20
    auth = OAuthClientCredentials(
        "https://auth.bank.example/oauth2/token", "hooks-client", secret, scope="webhooks"
    )
    async with opened(cli.database) as store:
        await store.update_subscription("org_cli", cli.sid, SubscriptionChanges(auth=auth))

    shown = await cli.run("subscriptions", "show", cli.sid)
    assert shown.code == 0, shown.stderr
    assert (
        "endpoint auth: OAuth client hooks-client at https://auth.bank.example/oauth2/token "
        "(basic, scope webhooks; secret (value hidden, write-only))"
    ) in shown.stdout.splitlines()
    assert secret not in shown.stdout + shown.stderr
