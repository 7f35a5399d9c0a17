"""The command line as people and scripts run it: `python -m service …` in a child process, with
the configuration in `WEBHOOKS_*` variables; and the demo receiver behind `make run`."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import SecretStr

from deploy.local.receiver import DEMO_PATH, Receiver
from service.events import Accepted, Rejected, parse_event
from service.samples import sample_event
from service.settings import load_settings
from service.signing import SignatureHeaders, signature_headers
from service.store import open_store
from service.store.migrate import head_revision
from tests.conftest import TEST_ENCRYPTION_KEY


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


async def run_cli(*args: str, env: Mapping[str, str], cwd: Path) -> Result:
    # Only the variables the test gives: none of the developer's WEBHOOKS_* settings leak in.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WEBHOOKS_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        *args,
        env={**clean, **env},
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


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


async def org_for(database: Database, key: str) -> str | None:
    settings = load_settings(
        database_url=database.url,
        encryption_key=SecretStr(TEST_ENCRYPTION_KEY) if "postgres" in database.url else None,
    )
    store = await open_store(settings, run_migrations=False)
    try:
        return await store.org_for_api_key(key)
    finally:
        await store.close()


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
    assert again.code == 1
    assert "no active API key" in again.stderr
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

    assert result.code == 2
    assert "--org" in result.stderr


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


# -- produce ----------------------------------------------------------------------------------


async def read_all(bootstrap: str, topics: list[str]) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record now in `topics` (three partitions each), without a consumer group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in range(3)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[ConsumerRecord[bytes, bytes]] = []
        async with asyncio.timeout(30):
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                batches = await consumer.getmany(timeout_ms=500)
                for batch in batches.values():
                    records.extend(batch)
        return records
    finally:
        await consumer.stop()


def kafka_env(bootstrap: str, topics: list[str]) -> dict[str, str]:
    return {
        "WEBHOOKS_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "WEBHOOKS_KAFKA_TOPICS": ",".join(topics[:3]),
    }


async def test_produce_publishes_catalog_events_keyed_by_customer(
    kafka_bootstrap: str, topics: list[str], tmp_path: Path
) -> None:
    args = ["produce", "--count", "5", "--org", "org_cli", "--sibling-service", "orchestration"]
    result = await run_cli(*args, env=kafka_env(kafka_bootstrap, topics), cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert re.fullmatch(r"produced 5 events in [0-9.]+ s \([0-9]+/s\)\n", result.stdout)
    records = await read_all(kafka_bootstrap, topics)
    assert len(records) == 5
    per_event: dict[str, int] = {}
    for record in records:
        parsed = parse_event(record.value, 256 * 1024)
        assert isinstance(parsed, Accepted)
        assert record.topic.endswith("." + parsed.event)
        assert parsed.org_id == "org_cli"
        assert parsed.event_id.startswith("evt_")
        assert record.key == orjson.loads(parsed.body)["data"]["customerId"].encode()
        assert list(record.headers) == [("x-sibling-service", b"orchestration")]
        per_event[parsed.event] = per_event.get(parsed.event, 0) + 1
    # The catalog takes turns: 2, 2 and 1 of five.
    assert per_event == {
        "verification.created": 2,
        "customer.kyc_updated": 2,
        "review.overridden": 1,
    }


async def test_produce_one_event_with_poison_records(
    kafka_bootstrap: str, topics: list[str], tmp_path: Path
) -> None:
    env = kafka_env(kafka_bootstrap, topics)

    args = ["produce", "--count", "2", "--event", "review.overridden", "--invalid", "7"]
    result = await run_cli(*args, env=env, cwd=tmp_path)

    assert result.code == 0, result.stderr
    assert result.stdout.startswith("produced 2 events and 7 invalid records in ")
    records = await read_all(kafka_bootstrap, topics[:3])
    assert {r.topic for r in records} == {topics[2]}
    parsed = [parse_event(r.value, 256 * 1024) for r in records]
    assert sum(isinstance(p, Accepted) for p in parsed) == 2
    reasons = {p.reason for p in parsed if isinstance(p, Rejected)}
    assert len(reasons) == 7
    assert "too_large" in reasons
    assert "empty" in reasons
    assert all(not r.headers for r in records)


async def test_produce_at_a_rate_follows_the_schedule(
    kafka_bootstrap: str, topics: list[str], tmp_path: Path
) -> None:
    env = kafka_env(kafka_bootstrap, topics)

    result = await run_cli("produce", "--count", "11", "--rate", "50", env=env, cwd=tmp_path)

    assert result.code == 0, result.stderr
    match = re.match(r"produced 11 events in ([0-9.]+) s", result.stdout)
    assert match is not None, result.stdout
    # Event i leaves at i/50 s: the last one 0.2 s after the first.
    assert 0.19 <= float(match.group(1)) < 5


async def test_produce_needs_a_topic_for_each_event(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = {
        "WEBHOOKS_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "WEBHOOKS_KAFKA_TOPICS": "identity.verification.created",
    }

    result = await run_cli("produce", "--event", "review.overridden", env=env, cwd=tmp_path)

    assert result.code == 2
    assert "review.overridden" in result.stderr


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
    async with Receiver(secret_file=secret_file, emit=lines.append).serving() as receiver:
        yield DemoReceiver(receiver.base + DEMO_PATH, secret_file, lines)


SECRET = "qe_whsec_demo0123456789abcdef"


def delivery(
    secret: str = SECRET, mode: SignatureHeaders = SignatureHeaders.BOTH
) -> tuple[bytes, dict[str, str]]:
    envelope = sample_event("verification.created", "org_demo", datetime.now(UTC))
    body = orjson.dumps(envelope)
    headers = {
        "Content-Type": "application/json",
        "X-Identity-Event": "verification.created",
        "X-Identity-Delivery": "whd_01JD2Y8Q0S6M2X0YV1X4J5T7ZK",
        "X-Sibling-Service": "orchestration",
        **signature_headers(mode, [secret], body, int(time.time())),
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

    for mode in (SignatureHeaders.QUANTUM, SignatureHeaders.LEGACY):
        body, headers = delivery(mode=mode)
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
        "deploy.local.receiver",
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
