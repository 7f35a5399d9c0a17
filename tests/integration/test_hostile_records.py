"""Hostile records on the real topics, against the real service; and what its logs and its
database hold afterwards.

One `identity-webhooks serve` (real Kafka, real PostgreSQL, debug logs) runs for the module with
two orgs, each subscribed to all three events at a receiver path of its own. Hypothesis then
produces batches of records to the service's topics: valid events (odd unicode, surrogate pairs,
extra fields, nullable fields, big but allowed values, nesting the encoder can still write,
duplicate keys where the last one wins) and invalid ones (random bytes, tombstones, invalid UTF-8,
lone surrogates, JSON that is not an object, missing fields, wrong types, bad timestamps, nesting
deeper than the encoder writes, values over WEBHOOKS_MAX_EVENT_BYTES), each with a random key
and random headers. After each batch:

- every valid event reached its own org's endpoint, exactly its bytes, and never the other's;
- every other record is on the dead-letter topic with a reason and its original key, value and
  headers;
- the service is still up and ready (the consumer never stops).

`make test` runs HYPOTHESIS_RECORDS_EXAMPLES=100 batches (fixed seed); `make test-fuzz` many
more. The counts per input class are printed and written to var/fuzz/records.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from service.settings import load_settings
from service.store import open_store
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support.postgres import raw_database_bytes, scratch_database
from tests.support.process import ServiceProcess
from tools.receiver import Receiver, start_receiver

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("HYPOTHESIS_RECORDS_EXAMPLES", "100"))
SEED = int(os.environ.get("FUZZ_SEED", "20261201"))
MAX_EVENT_BYTES = 64 * 1024
ORGS = ("org_alpha", "org_beta")
CANARY = "pbcanary" + uuid.uuid4().hex[:12]  # in every JSON record's data; never in a log line
EVENTS = ("verification.created", "customer.kyc_updated", "review.overridden")
TALLY: Counter[str] = Counter()


# -- the running service ----------------------------------------------------------------------


@dataclass(eq=False, repr=False)
class Stack:
    """The running service and what the tests need of it."""

    service: ServiceProcess
    receiver: Receiver
    producer: AIOKafkaProducer
    topics: list[str]
    database_url: str
    keys: dict[str, str]
    dlq: dict[tuple[str, int, int], Any] = field(default_factory=dict)
    # (event id, path, body) received
    parsed: list[tuple[str | None, str, Any]] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis prints a dataclass argument field by field, and the receiver holds every
        # body it was sent: a falsifying example names the stack only.
        printer.text("Stack(…)")

    def path(self, org: str) -> str:
        return f"to-{org}"

    async def api(self, method: str, path: str, org: str, body: Any = None) -> Any:
        url = f"http://127.0.0.1:{self.service.port}/api/identity/webhooks{path}"
        headers = {"Authorization": f"Bearer {self.keys[org]}"}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, url, json=body, headers=headers) as response,
        ):
            assert response.status < 300, await response.text()
            return await response.json()


async def _collect_dlq(consumer: AIOKafkaConsumer, into: dict[tuple[str, int, int], Any]) -> None:
    async for record in consumer:
        headers = dict(record.headers)
        source = (
            headers["x-dlq-source-topic"].decode(),
            int(headers["x-dlq-source-partition"]),
            int(headers["x-dlq-source-offset"]),
        )
        into[source] = record


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, postgres_url: str) -> AsyncIterator[Stack]:
    run = uuid.uuid4().hex[:8]
    topics = [f"h{run}.identity.{event}" for event in EVENTS]
    dlq_topic = f"h{run}.dlq"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(name, 3, 1) for name in [*topics, dlq_topic]])
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(admin.close)
        stack.push_async_callback(admin.delete_topics, [*topics, dlq_topic])
        database_url = await stack.enter_async_context(
            scratch_database(postgres_url, f"webhooks_hostile_{run}")
        )
        env = {
            "WEBHOOKS_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "WEBHOOKS_KAFKA_TOPICS": ",".join(topics),
            "WEBHOOKS_KAFKA_DLQ_TOPIC": dlq_topic,
            "WEBHOOKS_KAFKA_GROUP_ID": f"hostile-{run}",
            "WEBHOOKS_DATABASE_URL": database_url,
            "WEBHOOKS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
            "WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true",
            "WEBHOOKS_MAX_EVENT_BYTES": str(MAX_EVENT_BYTES),
            "WEBHOOKS_RETRY_SCHEDULE": "1s,1s,1s",
            "WEBHOOKS_LOG_LEVEL": "debug",
        }
        store = await open_store(
            load_settings(database_url=database_url, encryption_key=SecretStr(TEST_ENCRYPTION_KEY))
        )
        keys = {org: (await store.create_api_key(org, "hostile"))[1] for org in ORGS}
        await store.close()
        receivers = start_receiver()
        receiver = await receivers.__anext__()
        stack.push_async_callback(receivers.aclose)
        service = ServiceProcess(env)
        await service.start()
        stack.push_async_callback(service.kill)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        stack.push_async_callback(producer.stop)
        consumer = AIOKafkaConsumer(
            dlq_topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        stack.push_async_callback(consumer.stop)
        built = Stack(service, receiver, producer, topics, database_url, keys=keys)
        reader = asyncio.create_task(_collect_dlq(consumer, built.dlq))
        stack.callback(reader.cancel)
        await service.wait_ready()
        for org in ORGS:
            created = await built.api(
                "POST", "", org, {"url": receiver.url(built.path(org)), "events": list(EVENTS)}
            )
            built.secrets.append(created["secret"])
            result = await built.api("POST", f"/{created['id']}/test", org)
            assert result["status"] == "sent"
        yield built
        _report()


def _report() -> None:
    summary = {"seed": SEED, "batches": EXAMPLES, "records": dict(sorted(TALLY.items()))}
    print(f"\nhostile records: {json.dumps(summary)}")
    Path("var/fuzz").mkdir(parents=True, exist_ok=True)
    Path("var/fuzz/records.json").write_text(json.dumps(summary, indent=2) + "\n")


# -- the records ------------------------------------------------------------------------------

DELIVER, DEAD, SKIP = "deliver", "dead-letter", "skip"


@dataclass(frozen=True)
class Spec:
    """One record to produce. `build(event_id)` makes its value; `org` is whose it is."""

    label: str
    outcome: str
    org: str | None
    build: Callable[[str], bytes | None]
    reason: str | None = None  # the x-dlq-reason prefix expected, where it is certain

    def __repr__(self) -> str:
        return f"Spec({self.label!r}, {self.outcome!r}, {self.org!r}, reason={self.reason!r})"


text = st.text(max_size=40)  # any code point but lone surrogates: RTL, zero-width, NUL, emoji
name = st.text(min_size=1, max_size=40)
# Integers of any width (orjson alone would read those beyond 64 bits as floats).
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(10**40), 10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
timestamp = st.builds(
    lambda y, mo, d, h, mi, s, frac, zone: f"{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{zone}",
    st.integers(2030, 2099),
    st.integers(1, 12),
    st.integers(1, 28),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
    st.sampled_from(["", ".1", ".123", ".123456789"]),
    st.sampled_from(["Z", "z", "+00:00", "+05:30", "-11:00", "+14:00"]),
)
DATA: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "verification.created": {
        "verificationId": name,
        "customerId": name,
        "method": name,
        "status": name,
        "score": st.none() | st.integers(-(2**53), 2**53) | st.floats(-1e6, 1e6),
    },
    "customer.kyc_updated": {
        "customerId": name,
        "kycLevel": name,
        "kycLastVerifiedAt": st.none() | timestamp,
        "kycExpiresAt": st.none() | timestamp,
    },
    "review.overridden": {
        "verificationId": name,
        "customerId": name,
        "actorUserId": name,
        "fromStatus": name,
        "toStatus": name,
        "reason": st.none() | text,
    },
}
NULLABLE = {"score", "kycLastVerifiedAt", "kycExpiresAt", "reason"}


@st.composite
def envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """A valid envelope without its id (the test gives each a fresh one)."""
    event = draw(st.sampled_from(EVENTS))
    data = {key: draw(strategy) for key, strategy in DATA[event].items()}
    data.update(draw(st.dictionaries(st.text(min_size=1, max_size=12), json_value, max_size=3)))
    data["note"] = CANARY
    envelope = {
        "event": event,
        "occurredAt": draw(timestamp),
        "orgId": draw(st.sampled_from(ORGS)),
        "data": data,
    }
    envelope.update(draw(st.dictionaries(st.sampled_from(["v", "trace", "ünï"]), json_value)))
    return envelope


def _with_id(envelope: dict[str, Any], **data: Callable[[], Any]) -> Callable[[str], bytes]:
    """Builds the value at produce time; `data` adds fields made only then (large ones, which
    would otherwise sit in what Hypothesis prints)."""

    def build(event_id: str) -> bytes:
        full = {"id": event_id, **envelope}
        if data:
            full["data"] = {**envelope["data"], **{name: make() for name, make in data.items()}}
        return _encode(full)

    return build


def _nested(depth: int) -> Any:
    value: Any = CANARY
    for level in range(depth):
        value = [value] if level % 2 else {"n": value}
    return value


@st.composite
def records(draw: st.DrawFn) -> Spec:
    envelope = draw(envelopes())
    org = envelope["orgId"]
    kind = draw(
        st.sampled_from(
            [
                "valid",
                "valid_duplicate_keys",
                "valid_deep",
                "valid_big",
                "random_bytes",
                "tombstone",
                "invalid_utf8",
                "lone_surrogate",
                "not_an_object",
                "missing_field",
                "wrong_type",
                "bad_timestamp",
                "too_deep",
                "too_large",
                "unknown_event",
            ]
        )
    )
    if kind == "valid":
        return Spec(kind, DELIVER, org, _with_id(envelope))
    if kind == "valid_duplicate_keys":
        # The last of a repeated key wins, as in the body that is signed and delivered: the
        # decoy org and id in front must not route the event.
        decoy = next(o for o in ORGS if o != org)

        def duplicated(event_id: str) -> bytes:
            body = _encode({"id": event_id, **envelope})
            return b'{"orgId":"' + decoy.encode() + b'","id":"evt_decoy",' + body[1:]

        return Spec(kind, DELIVER, org, duplicated)
    if kind == "valid_deep":
        depth = draw(st.integers(10, 240))
        return Spec(kind, DELIVER, org, _with_id(envelope, deep=lambda: _nested(depth)))
    if kind == "valid_big":
        size = draw(st.integers(1_000, 25_000))
        return Spec(kind, DELIVER, org, _with_id(envelope, padding=lambda: "é" * size))
    if kind == "random_bytes":
        raw = draw(st.binary(min_size=1, max_size=2_000))
        return Spec(kind, DEAD, None, lambda _: raw)
    if kind == "tombstone":
        nothing = draw(st.sampled_from([None, b""]))
        return Spec(kind, DEAD, None, lambda _: nothing, "empty")
    if kind == "invalid_utf8":
        bad = draw(st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80"]))

        def broken(event_id: str) -> bytes:
            return _encode({"id": event_id, **envelope}).replace(b'"note"', b'"' + bad + b'"')

        return Spec(kind, DEAD, None, broken, "invalid_")
    if kind == "lone_surrogate":
        escape = draw(st.sampled_from([b"\\ud800", b"\\udfff", b"\\ud83dx"]))

        def lone(event_id: str) -> bytes:
            body = _encode({"id": event_id, **envelope})
            return body.replace(CANARY.encode(), CANARY.encode() + escape, 1)

        return Spec(kind, DEAD, None, lone, "invalid_json")
    if kind == "not_an_object":
        value = draw(json_value.filter(lambda v: not isinstance(v, dict)) | st.just([envelope]))
        return Spec(kind, DEAD, None, lambda _: _encode(value), "not_an_object")
    if kind == "missing_field":
        where = draw(st.sampled_from(["envelope", "data"]))
        if where == "envelope":
            gone = draw(st.sampled_from(["id", "event", "occurredAt", "orgId", "data"]))

            def missing(event_id: str) -> bytes:
                full = {"id": event_id, **envelope}
                del full[gone]
                return _encode(full)

            return Spec(kind, DEAD, None, missing, "missing_field")
        field_name = draw(st.sampled_from(sorted(DATA[envelope["event"]])))
        del envelope["data"][field_name]
        return Spec(kind, DEAD, None, _with_id(envelope), f"missing_field:data.{field_name}")
    if kind == "wrong_type":
        wrong: Any = draw(st.sampled_from([0, 1.5, True, [], {}, None, ""]))
        target = draw(st.sampled_from(["orgId", "event", "data", "data-field"]))
        if target == "data-field":
            field_name = draw(st.sampled_from(sorted(set(DATA[envelope["event"]]) - NULLABLE)))
            envelope["data"][field_name] = wrong
            return Spec(kind, DEAD, None, _with_id(envelope), f"invalid_field:data.{field_name}")
        if target == "data" and wrong in ({},):
            wrong = []
        envelope[target] = wrong
        return Spec(kind, DEAD, None, _with_id(envelope), "invalid_field")
    if kind == "bad_timestamp":
        envelope["occurredAt"] = draw(
            st.sampled_from(
                ["yesterday", "2026-02-30T00:00:00Z", "2026-05-24T11:42:18", "2026-05-24", ""]
            )
        )
        return Spec(kind, DEAD, None, _with_id(envelope), "invalid_field:occurredAt")
    if kind == "too_deep":
        depth = draw(st.integers(260, 2_000))
        shallow = _with_id(envelope, deep=lambda: "DEEP")

        def deep(event_id: str) -> bytes:
            # Deeper than the service's encoder writes, so spliced in as text.
            nested = b'{"n":[' * (depth // 2) + b"0" + b"]}" * (depth // 2)
            return shallow(event_id).replace(b'"DEEP"', nested, 1)

        return Spec(kind, DEAD, None, deep)
    if kind == "too_large":
        size = draw(st.integers(MAX_EVENT_BYTES, 3 * MAX_EVENT_BYTES))
        return Spec(kind, DEAD, None, _with_id(envelope, padding=lambda: "x" * size), "too_large")
    envelope["event"] = draw(st.sampled_from(["identity.future_event", "webhook.test", "ünknown"]))
    return Spec(kind, SKIP, None, _with_id(envelope))


headers = st.lists(
    st.tuples(
        st.sampled_from(["x-sibling-service", "traceparent", "X-Sibling-Service"]) | name,
        st.binary(max_size=40),
    ),
    max_size=4,
)


@dataclass
class Sent:
    spec: Spec
    event_id: str
    value: bytes | None
    key: bytes | None
    headers: list[tuple[str, bytes]]
    where: tuple[str, int, int]

    def envelope(self) -> Any:
        """The record as the producer meant it (the last of repeated keys wins)."""
        assert self.value is not None
        return json.loads(self.value)


async def _produce(
    stack: Stack, batch: list[tuple[Spec, bytes | None, list[Any], int]]
) -> list[Sent]:
    sent = []
    for spec, drawn_key, record_headers, topic_index in batch:
        event_id = "evt_" + uuid.uuid4().hex
        value = spec.build(event_id)
        # Kafka takes no record without both a key and a value.
        key = b"tombstone" if value is None and drawn_key is None else drawn_key
        meta = await stack.producer.send_and_wait(
            stack.topics[topic_index], value=value, key=key, headers=record_headers
        )
        where = (meta.topic, meta.partition, meta.offset)
        sent.append(Sent(spec, event_id, value, key, record_headers, where))
        TALLY[spec.label] += 1
    return sent


def _encode(value: Any) -> bytes:
    """Compact JSON, as a producer would write it; Python's encoder writes any integer."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _delivered(stack: Stack, event_id: str) -> list[tuple[str, Any]]:
    """(receiver path, parsed body) of every request that carried `event_id`."""
    for request in stack.receiver.requests[len(stack.parsed) :]:
        body = json.loads(request.body)
        stack.parsed.append((body.get("id"), request.path, body))
    return [(path, body) for found, path, body in stack.parsed if found == event_id]


async def _settled(stack: Stack, sent: list[Sent]) -> None:
    async def done() -> bool:
        for item in sent:
            if item.spec.outcome == DELIVER and not _delivered(stack, item.event_id):
                return False
            if item.spec.outcome == DEAD and item.where not in stack.dlq:
                return False
        return True

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not await done():
        assert stack.service.process is not None
        assert stack.service.process.returncode is None, "".join(stack.service.logs[-20:])
        if loop.time() > deadline:
            missing = [
                (item.spec.label, item.spec.outcome)
                for item in sent
                if (item.spec.outcome == DELIVER and not _delivered(stack, item.event_id))
                or (item.spec.outcome == DEAD and item.where not in stack.dlq)
            ]
            raise AssertionError(f"not settled within 60 s: {missing}")
        await asyncio.sleep(0.05)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    # No shrinking: each try is a round trip through Kafka; a failure reports its batch as is.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
@seed(SEED)
@given(
    batch=st.lists(
        st.tuples(
            records(),
            st.none() | st.binary(max_size=64),
            headers,
            st.integers(0, len(EVENTS) - 1),
        ),
        min_size=1,
        max_size=20,
    )
)
async def test_hostile_records_never_stop_the_consumer(
    stack: Stack, batch: list[tuple[Spec, bytes | None, list[Any], int]]
) -> None:
    sent = await _produce(stack, batch)
    await _settled(stack, sent)
    for item in sent:
        if item.spec.outcome == DELIVER:
            assert item.spec.org is not None
            # Once, to its own org only, with every field and number as produced.
            expected = [(stack.path(item.spec.org), item.envelope())]
            assert _delivered(stack, item.event_id) == expected, item.spec.label
        elif item.spec.outcome == DEAD:
            dead = stack.dlq[item.where]
            assert dead.key == item.key
            assert dead.value == item.value
            assert list(dead.headers[: len(item.headers)]) == item.headers
            reason = dict(dead.headers)["x-dlq-reason"].decode()
            assert reason, item.spec.label
            assert reason.isascii(), reason
            if item.spec.reason is not None:
                assert reason.startswith(item.spec.reason), (item.spec.label, reason)
        else:
            assert item.where not in stack.dlq
            assert not _delivered(stack, item.event_id)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{stack.service.port}/readyz") as ready,
    ):
        assert ready.status == 200


async def test_equal_event_ids_reach_only_their_own_org(stack: Stack) -> None:
    event_id = "evt_" + uuid.uuid4().hex
    envelopes = {}
    for org in ORGS:
        envelopes[org] = {
            "id": event_id,
            "event": "verification.created",
            "occurredAt": "2031-01-01T00:00:00.000Z",
            "orgId": org,
            "data": {
                "verificationId": f"ver_{org}",
                "customerId": "cus_same",
                "method": "nik",
                "status": "approved",
                "score": 0.9,
                "note": CANARY,
            },
        }
        await stack.producer.send_and_wait(
            stack.topics[0], _encode(envelopes[org]), key=b"cus_same"
        )
    await stack.receiver.wait_for(
        lambda: len(_delivered(stack, event_id)) >= len(ORGS), what="both orgs' events"
    )
    await asyncio.sleep(0.5)  # time for a stray third request to show
    assert sorted(_delivered(stack, event_id)) == sorted(
        (stack.path(org), envelope) for org, envelope in envelopes.items()
    )
    TALLY["equal_ids_across_orgs"] += 2


async def test_a_malformed_http_request_logs_no_api_key(stack: Stack) -> None:
    key = stack.keys[ORGS[0]].encode()
    request = (
        b"GET /api/identity/webhooks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + key
        + b"\x01\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.service.port)
    writer.write(request)
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    assert status_line.split()[1] == b"400"
    await asyncio.sleep(0.5)  # the log line is written after the answer
    assert not [line for line in stack.service.logs if key.decode() in line]


async def test_the_whole_runs_logs_hold_no_secret_key_or_payload(stack: Stack) -> None:
    logs = "".join(stack.service.logs)
    assert '"level": "debug"' in logs  # every level was on
    assert "ingest.dead_lettered" in logs  # and the run above was logged
    for secret in stack.secrets:
        assert secret not in logs
        assert secret.removeprefix("qe_whsec_") not in logs
    for key in stack.keys.values():
        assert key not in logs
        assert key.removeprefix("qe_key_") not in logs
    assert TEST_ENCRYPTION_KEY not in logs
    assert CANARY not in logs


async def test_the_database_holds_secrets_only_encrypted_and_keys_only_hashed(
    stack: Stack,
) -> None:
    raw = await raw_database_bytes(stack.database_url)
    assert b"whk_" in raw  # the files read really are this database's
    for secret in stack.secrets:
        assert secret.encode() not in raw
        assert secret.removeprefix("qe_whsec_").encode() not in raw
    for key in stack.keys.values():
        assert key.encode() not in raw
        assert key.removeprefix("qe_key_").encode() not in raw
    assert TEST_ENCRYPTION_KEY.encode() not in raw
