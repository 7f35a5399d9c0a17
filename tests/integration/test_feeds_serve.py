"""Polling subscriptions end to end: real Kafka, PostgreSQL, and `identity-webhooks serve` as
two child processes for the module (`ingest`, the whole service, and `reads`, the API alone
with `--no-consumer`) sharing one database.

- a reader gets every event once per delivery id, in order per customer for an ordered
  subscription, and nothing of another org;
- a reader process SIGKILLed twice during 1,000 events and restarted from its saved cursor
  misses none, and repeats a row only with its delivery id;
- a long poll on `reads` is answered when `ingest` records a delivery, before its wait is out
  (docs/decisions/0014-polling-and-listen.md: about a second across replicas);
- `identity-webhooks listen` as a real process forwards real deliveries to a local receiver,
  where the push receivers' checks verify them in every scheme; killed and restarted with its
  cursor file it misses nothing and repeats only with the same delivery id; it fails with a
  message and exit 1 on a bad key, an unreachable API and a local URL that refuses.

Subscriptions are made on `ingest`: the API answers a change after its own process has it in
its index, so no event produced afterwards can miss it. Each test has an org of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from service.events import CATALOG
from service.samples import record_key, sample_event
from service.signing import LEGACY_HEADER, QUANTUM_HEADER, verify_standard
from service.store import open_store
from tests.conftest import CATALOG_TOPICS
from tests.support.postgres import scratch_database
from tests.support.process import ServiceProcess, free_port, service_env, service_settings
from tests.support.signatures import stripe_verifies, we_verify
from tools.receiver import Received, Receiver, start_receiver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ORGS = (
    "org_fs_order",
    "org_fs_other",
    "org_fs_kill",
    "org_fs_wake",
    "org_fs_listen",
    "org_fs_fail",
)
BASE = "/api/identity/webhooks"
EVENTS = [name for name in CATALOG if name != "webhook.test"]


@dataclass(eq=False)
class Stack:
    ingest: ServiceProcess
    reads: ServiceProcess
    producer: AIOKafkaProducer
    topics: dict[str, str]  # by event
    keys: dict[str, str]  # by org
    receiver: Receiver
    session: aiohttp.ClientSession

    def url(self, service: ServiceProcess) -> str:
        return f"http://127.0.0.1:{service.port}"

    async def call(
        self, service: ServiceProcess, org: str, method: str, path: str, body: Any = None
    ) -> tuple[int, Any]:
        async with self.session.request(
            method,
            self.url(service) + BASE + path,
            json=body,
            headers={"Authorization": f"Bearer {self.keys[org]}"},
        ) as response:
            return response.status, orjson.loads(await response.read())

    async def subscribe(self, org: str, **fields: Any) -> dict[str, Any]:
        """A polling subscription to every catalog event, made on `ingest`."""
        status, made = await self.call(
            self.ingest, org, "POST", "", {"delivery": "poll", "events": EVENTS, **fields}
        )
        assert status == 201, made
        return dict(made)

    async def produce(self, events: Sequence[dict[str, Any]]) -> None:
        """Each event to its topic, keyed by its customer; all sent, then flushed."""
        for event in events:
            await self.producer.send(
                self.topics[event["event"]], orjson.dumps(event), key=record_key(event)
            )
        await self.producer.flush()


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, postgres_url: str, postgres_template: str
) -> AsyncIterator[Stack]:
    run = uuid.uuid4().hex[:8]
    names = [f"f{run}.identity.{event}" for event in CATALOG_TOPICS] + [f"f{run}.dlq"]
    async with contextlib.AsyncExitStack() as exits:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        exits.push_async_callback(admin.close)
        await admin.create_topics([NewTopic(name, 3, 1) for name in names])
        exits.push_async_callback(admin.delete_topics, names)
        database_url = await exits.enter_async_context(
            scratch_database(postgres_url, f"webhooks_feeds_{run}", template=postgres_template)
        )
        settings = service_settings(database_url, kafka_bootstrap)
        store = await open_store(settings, run_migrations=False)
        try:
            keys = {org: (await store.create_api_key(org, "feeds"))[1] for org in ORGS}
        finally:
            await store.close()
        env = service_env(settings, names, f"feeds-{run}")
        ingest = ServiceProcess(env)
        reads = ServiceProcess(env, args=["--no-consumer"])
        for service in (ingest, reads):
            await service.start()
            exits.push_async_callback(service.kill)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
        await producer.start()
        exits.push_async_callback(producer.stop)
        receivers = start_receiver()
        receiver = await receivers.__anext__()
        exits.push_async_callback(receivers.aclose)
        session = await exits.enter_async_context(aiohttp.ClientSession())
        await asyncio.gather(ingest.wait_ready(), reads.wait_ready())
        yield Stack(
            ingest,
            reads,
            producer,
            dict(zip(CATALOG_TOPICS, names, strict=False)),
            keys,
            receiver,
            session,
        )


def events_of(
    org: str, customers: Sequence[str], rounds: int, names: Sequence[str]
) -> list[dict[str, Any]]:
    """`rounds` rounds over the customers, each event of the next of `names` in turn."""
    now = datetime.now(UTC)
    made = []
    kinds = itertools.cycle(names)
    for _ in range(rounds):
        for customer in customers:
            event = sample_event(next(kinds), org, now)
            event["data"]["customerId"] = customer
            made.append(event)
    return made


async def read_all(
    stack: Stack, service: ServiceProcess, org: str, subscription: str, expected: int
) -> list[dict[str, Any]]:
    """Reads the feed with the long poll until `expected` rows came, then once more (a second's
    wait) for any beyond them."""
    rows: list[dict[str, Any]] = []
    cursor = None
    async with asyncio.timeout(60):
        while True:
            wait = 1 if len(rows) >= expected else 5
            query = f"?limit=100&wait={wait}" + (f"&after={cursor}" if cursor else "")
            status, page = await stack.call(service, org, "GET", f"/{subscription}/events{query}")
            assert status == 200, page
            rows += page["rows"]
            cursor = page["nextCursor"]
            if len(rows) >= expected and not page["rows"]:
                return rows


# -- a reader ---------------------------------------------------------------------------------


async def test_a_reader_gets_every_event_once_in_order_and_nothing_of_another_org(
    stack: Stack,
) -> None:
    org, other = ORGS[0], ORGS[1]
    ordered = await stack.subscribe(org, ordering="customer")
    theirs = await stack.subscribe(other)
    # One topic, so that Kafka keeps each customer's order (a partition per key).
    mine = events_of(org, [f"cus_fo{i:02d}" for i in range(20)], 10, ["verification.created"])
    foreign = events_of(other, [f"cus_fx{i:02d}" for i in range(10)], 5, ["verification.created"])
    await stack.produce([e for pair in itertools.zip_longest(mine, foreign) for e in pair if e])

    rows = await read_all(stack, stack.reads, org, ordered["id"], len(mine))
    bodies = [orjson.loads(row["body"]) for row in rows]
    assert {b["orgId"] for b in bodies} == {org}
    assert len({row["deliveryId"] for row in rows}) == len(rows) == len(mine)
    assert sorted(b["id"] for b in bodies) == sorted(e["id"] for e in mine)
    read_order: dict[str, list[str]] = defaultdict(list)
    for body in bodies:
        read_order[body["data"]["customerId"]].append(body["id"])
    produced_order: dict[str, list[str]] = defaultdict(list)
    for event in mine:
        produced_order[event["data"]["customerId"]].append(event["id"])
    assert read_order == produced_order

    theirs_rows = await read_all(stack, stack.reads, other, theirs["id"], len(foreign))
    assert sorted(orjson.loads(r["body"])["id"] for r in theirs_rows) == sorted(
        e["id"] for e in foreign
    )
    # The other org's key finds no such feed.
    status, _ = await stack.call(stack.reads, other, "GET", f"/{ordered['id']}/events")
    assert status == 404


async def test_a_reader_killed_twice_during_1000_events_misses_none(
    stack: Stack, tmp_path: Path
) -> None:
    org = ORGS[2]
    subscription = await stack.subscribe(org, ordering="customer")
    events = events_of(org, [f"cus_fk{i:02d}" for i in range(50)], 20, EVENTS)
    cursor_file, out = tmp_path / "cursor", tmp_path / "rows"
    out.touch()
    command = [
        sys.executable,
        "-m",
        "tests.support.feedreader",
        stack.url(stack.reads),
        stack.keys[org],
        subscription["id"],
        str(cursor_file),
        str(out),
    ]

    def lines() -> list[str]:
        return out.read_text().splitlines()

    def events_read() -> int:
        return len({line.split()[1] for line in lines()})

    async def read_until(reader: asyncio.subprocess.Process, count: int) -> None:
        async with asyncio.timeout(60):
            while events_read() < count:
                assert reader.returncode is None, "the reader ended"
                await asyncio.sleep(0.01)

    reader = await asyncio.create_subprocess_exec(*command)
    try:
        await stack.produce(events)
        kills = []
        for at in (300, 650):
            await read_until(reader, at)
            reader.send_signal(signal.SIGKILL)
            await reader.wait()
            kills.append(events_read())
            reader = await asyncio.create_subprocess_exec(*command)
        await read_until(reader, len(events))
        # One read more, with the last cursor: what it read is acknowledged.
        async with asyncio.timeout(15):
            while True:
                status, row = await stack.call(stack.reads, org, "GET", f"/{subscription['id']}")
                assert status == 200, row
                if row["feed"]["unread"] == 0:
                    break
                await asyncio.sleep(0.2)
    finally:
        if reader.returncode is None:
            reader.send_signal(signal.SIGKILL)
            await reader.wait()
    assert all(at < len(events) for at in kills), kills  # both kills came before the end
    read = [line.split() for line in lines()]
    deliveries: dict[str, set[str]] = defaultdict(set)
    for delivery_id, event_id, row_org, _ in read:
        assert row_org == org
        deliveries[event_id].add(delivery_id)
    assert set(deliveries) == {e["id"] for e in events}
    assert all(len(ids) == 1 for ids in deliveries.values())  # a repeat is the same delivery
    print(f"\nreader killed at {kills} events read; {len(read) - len(events)} rows read twice")


# -- across replicas --------------------------------------------------------------------------


async def test_a_long_poll_on_one_replica_is_answered_when_another_records(
    stack: Stack,
) -> None:
    org = ORGS[3]
    subscription = await stack.subscribe(org)
    wait = 20
    started = time.monotonic()
    poll = asyncio.create_task(
        stack.call(stack.reads, org, "GET", f"/{subscription['id']}/events?wait={wait}")
    )
    await asyncio.sleep(0.5)
    assert not poll.done()
    event = events_of(org, ["cus_fw"], 1, ["review.overridden"])
    produced = time.monotonic()
    await stack.produce(event)
    status, page = await poll
    answered = time.monotonic()
    assert status == 200, page
    assert [row["eventId"] for row in page["rows"]] == [event[0]["id"]]
    assert answered - started < wait  # woken by the recheck, not by the end of its wait
    print(f"\nanswered {answered - produced:.2f} s after the produce")


# -- listen -----------------------------------------------------------------------------------


@dataclass(eq=False)
class Listen:
    """One `identity-webhooks listen` process, its output collected line by line."""

    process: asyncio.subprocess.Process
    out: list[str]
    err: list[str]
    reader: asyncio.Task[None]

    async def line(self, start: str, timeout: float = 30) -> str:
        async with asyncio.timeout(timeout):
            while True:
                for text in self.out:
                    if text.startswith(start):
                        return text
                assert self.process.returncode is None, "".join(self.err)
                await asyncio.sleep(0.02)

    async def ended(self, timeout: float = 30) -> int:
        async with asyncio.timeout(timeout):
            code = await self.process.wait()
            await self.reader
        return code

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        await self.ended()


async def listen(*args: str, env: dict[str, str] | None = None) -> Listen:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        "listen",
        *args,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out: list[str] = []
    err: list[str] = []

    async def collect() -> None:
        assert process.stdout is not None
        assert process.stderr is not None

        async def lines(stream: asyncio.StreamReader, into: list[str]) -> None:
            async for line in stream:
                into.append(line.decode())

        await asyncio.gather(lines(process.stdout, out), lines(process.stderr, err))

    return Listen(process, out, err, asyncio.create_task(collect()))


async def test_listen_forwards_verified_deliveries_and_resumes_after_a_kill(
    stack: Stack, tmp_path: Path
) -> None:
    org = ORGS[4]
    path = "listen"
    env = {"WEBHOOKS_API_URL": stack.url(stack.ingest), "WEBHOOKS_API_KEY": stack.keys[org]}
    args = ("--forward-to", stack.receiver.url(path), "--cursor-file", str(tmp_path / "cursor"))
    first = await listen(*args, env=env)
    try:
        shown = (await first.line("signing secret (shown once): ")).split()
        secret, standard = shown[4], shown[7].rstrip(")")
        listening = await first.line("listening: ")
        events = events_of(org, [f"cus_fl{i:02d}" for i in range(20)], 6, EVENTS)
        await stack.produce(events)
        await stack.receiver.wait_for(lambda: len(stack.receiver.at(path)) >= 40, 30, "40")
        await first.kill()
        killed_at = len(stack.receiver.at(path))
        second = await listen(*args, env=env)
        try:
            # The same subscription, found by its name; its secret is not shown again.
            assert await second.line("listening: ") == listening
            wanted = {e["id"] for e in events}

            def printed() -> set[str]:
                # A line per delivery with the local answer (one forwarded just before the
                # kill may have had none: it is forwarded again, with its line, after it).
                return {
                    line.split()[3] for line in first.out + second.out if line.endswith("→ 200\n")
                }

            def through() -> bool:
                return wanted <= {r.event_id for r in stack.receiver.at(path)} and wanted <= (
                    printed()
                )

            await stack.receiver.wait_for(through, 30, "every event forwarded and printed")
            assert printed() == wanted
            assert not any(line.startswith("signing secret") for line in second.out)
        finally:
            await second.kill()
    finally:
        await first.kill()
    got: list[Received] = stack.receiver.at(path)
    assert killed_at < len(events)
    deliveries: dict[str, set[str]] = defaultdict(set)
    for request in got:
        deliveries[request.event_id].add(request.delivery)
        assert we_verify(secret, request, LEGACY_HEADER)
        assert we_verify(secret, request, QUANTUM_HEADER)
        assert stripe_verifies(secret, request)
        verify_standard(standard, request.headers, request.body)
        assert request.headers["webhook-id"] == request.delivery
    assert set(deliveries) == {e["id"] for e in events}
    assert all(len(ids) == 1 for ids in deliveries.values())


async def test_listen_fails_clearly(stack: Stack) -> None:
    org = ORGS[5]
    api = stack.url(stack.ingest)
    hook = f"http://127.0.0.1:{free_port()}/hook"

    nowhere = f"http://127.0.0.1:{free_port()}"
    bad_key, away, refused = await asyncio.gather(
        listen("--api-url", api, "--api-key", "whk_live_nope", "--forward-to", hook),
        listen("--api-url", nowhere, "--api-key", stack.keys[org], "--forward-to", hook),
        listen("--api-url", api, "--api-key", stack.keys[org], "--forward-to", hook),
    )
    assert await bad_key.ended() == 1
    assert "refused the key (401)" in "".join(bad_key.err)
    assert await away.ended() == 1
    assert f"cannot reach the API at {nowhere}" in "".join(away.err)

    # The local receiver refuses: a triggered event cannot be forwarded, and nothing is lost.
    try:
        await refused.line("listening: ")
        trigger = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service",
            "trigger",
            "review.overridden",
            "--api-url",
            api,
            "--api-key",
            stack.keys[org],
            stdout=asyncio.subprocess.PIPE,
        )
        triggered, _ = await trigger.communicate()
        assert trigger.returncode == 0
        delivery_id = orjson.loads(triggered)["deliveryId"]
        assert await refused.ended() == 1
    finally:
        await refused.kill()
    message = "".join(refused.err)
    assert f"cannot forward to {hook}" in message
    assert delivery_id in message
