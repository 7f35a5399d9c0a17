"""What one bench run stands on: fresh topics, a fresh database, subscriptions, the service child.

Every run gets its own Kafka topics (3 partitions each), consumer group and database (a SQLite
file under var/bench/ or a PostgreSQL database made for it), all removed afterwards. The service
runs as `python -m service serve`, its logs going to var/bench/logs/; its CPU time and peak RSS
are read from /proc, as the OS counts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from cryptography.fernet import Fernet
from pydantic import SecretStr

import service
from service.events import CATALOG
from service.settings import load_settings
from service.store import open_store
from tests.support.postgres import scratch_database
from tests.support.process import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[1]
VAR = ROOT / "var" / "bench"
SERVICE_HOME = Path(service.__file__).parents[1]
ORG = "org_bench"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:54329/webhooks"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Backends:
    """Where the shared services are: the broker and, when PostgreSQL is benched, its server."""

    kafka: str
    postgres: str | None

    @classmethod
    def from_env(cls, *, postgres: bool = True) -> Backends:
        """Where `deploy/local/with-services.sh` leaves them, or the local defaults."""
        return cls(
            kafka=os.environ.get("WEBHOOKS_TEST_KAFKA", "127.0.0.1:9092"),
            postgres=os.environ.get("WEBHOOKS_TEST_POSTGRES", DEFAULT_POSTGRES)
            if postgres
            else None,
        )


@dataclass(frozen=True)
class Topics:
    catalog: dict[str, str]  # event name -> topic
    dlq: str

    @property
    def names(self) -> list[str]:
        return [*self.catalog.values(), self.dlq]


@contextlib.asynccontextmanager
async def fresh_topics(bootstrap: str, run: str) -> AsyncIterator[Topics]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    topics = Topics({e: f"bench.{run}.{e}" for e in CATALOG}, f"bench.{run}.dlq")
    try:
        await admin.create_topics([NewTopic(n, 3, 1) for n in topics.names])
        yield topics
    finally:
        with contextlib.suppress(Exception):
            await admin.delete_topics(topics.names)
        await admin.close()


def _remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


@contextlib.asynccontextmanager
async def fresh_database(store: str, backends: Backends, run: str) -> AsyncIterator[str]:
    """The URL of an empty database of kind `store` ("sqlite" or "postgres"), removed after."""
    if store == "sqlite":
        VAR.mkdir(parents=True, exist_ok=True)
        path = VAR / f"run-{run}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            _remove_sqlite(path)
        return
    assert backends.postgres is not None, "PostgreSQL is not configured"
    async with scratch_database(backends.postgres, f"bench_{run}") as url:
        yield url


async def create_subscriptions(
    database_url: str,
    encryption_key: str,
    urls: Mapping[str, str],
    events: Mapping[str, tuple[str, ...]],
    ordering: Mapping[str, str] | None = None,
    *,
    content_filter: str | None = None,
    replacing: bool = False,
) -> dict[str, str]:
    """One subscription per name (to every catalog event unless `events` names some; ordered as
    `ordering` says, else "none"; with `content_filter` as its filter, else none), created
    through the store before the service starts (which also migrates the schema). Returns
    subscription id -> name. `replacing`, in a database kept between runs: the load org's
    subscriptions of earlier runs are deleted first (their open deliveries cancelled), or each
    run would fan its events out to every earlier run's receiver, long gone."""
    settings = load_settings(database_url=database_url, encryption_key=SecretStr(encryption_key))
    store = await open_store(settings)
    try:
        while replacing and (earlier := await store.list_subscriptions(ORG, 100, None)).rows:
            for subscription in earlier.rows:
                await store.delete_subscription(ORG, subscription.id)
        names: dict[str, str] = {}
        for name, url in urls.items():
            wanted = events.get(name, CATALOG)
            # Only when asked: a revision before ordered delivery (a paired baseline running
            # today's bench) has no such argument.
            # Only when asked: a revision before ordered delivery or content filters (a paired
            # baseline running today's bench) has no such argument.
            options: dict[str, Any] = {}
            if ordering and name in ordering:
                # Passed as its value: the store of a revision this bench runs against
                # (`--harness current`) may predate the `Ordering` enum.
                options["ordering"] = ordering[name]
            if content_filter is not None:
                options["content_filter"] = content_filter
            subscription = await store.create_subscription(ORG, url, wanted, "bench", **options)
            names[subscription.id] = name
        return names
    finally:
        await store.close()


@dataclass(frozen=True)
class StoreRow:
    """A delivery as the store holds it after a run: what the ledger checks the receiver
    against."""

    event_id: str
    subscription_id: str
    status: str


async def store_deliveries(database_url: str) -> list[StoreRow]:
    """Every delivery row, read straight from the database once the service has stopped."""
    # The bench's own org: a seeded backlog or history is not the run's.
    query = f"SELECT event_id, subscription_id, status FROM deliveries WHERE org_id = '{ORG}'"
    if database_url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as db:
            return [StoreRow(*row) for row in db.execute(query)]
    connection = await asyncpg.connect(database_url)
    try:
        return [StoreRow(*row) for row in await connection.fetch(query)]
    finally:
        await connection.close()


async def subscription_blocked(database_url: str, subscription_id: str) -> int:
    """An ordered subscription's `blockedCustomers` as the API counts it, read while it runs."""
    query = (
        "SELECT count(DISTINCT ordering_key) FROM deliveries WHERE subscription_id = {} "
        "AND status = 'retrying' AND seq IS NOT NULL"
    )
    if database_url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as db:
            return int(db.execute(query.format("?"), (subscription_id,)).fetchone()[0])
    connection = await asyncpg.connect(database_url)
    try:
        return int(await connection.fetchval(query.format("$1"), subscription_id))
    finally:
        await connection.close()


@dataclass(frozen=True)
class ProcStats:
    cpu_s: float  # user + system, all threads
    system_s: float  # of which in the kernel
    rss_mb: float
    peak_rss_mb: float  # VmHWM


def proc_stats(pid: int) -> ProcStats:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        # Fields after the command name, which is in parentheses and may contain spaces.
        fields = stat.read().rsplit(b")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    system = int(fields[12]) / CLK_TCK
    rss = peak = 0.0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return ProcStats(cpu, system, rss, peak)


@dataclass
class ServiceChild:
    """`python -m service serve` with the bench's WEBHOOKS_* environment."""

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None
    module: str = "service"  # `python -m <module> serve`: `bench.stallwatch` adds a ticker

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, "WEBHOOKS_HTTP_PORT": str(self.port)}
        with self.log_path.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                self.module,
                "serve",
                env=env,
                # Where the `service` this harness imported lives (this tree, or another
                # revision's with `bench.paired --harness current`): `-m` puts it first.
                cwd=SERVICE_HOME,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
            )
        await self._wait_ready()

    async def _wait_ready(self, timeout: float = 60) -> None:
        assert self.process is not None

        def exited() -> BaseException:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            return RuntimeError(f"the service exited during start-up:\n{tail}")

        await wait_ready(self.port, self.process, exited, timeout)

    def stats(self) -> ProcStats:
        return proc_stats(self.pid)

    async def stop(self, timeout: float = 60) -> ProcStats | None:
        """SIGTERM (the graceful drain) and wait; returns the last /proc figures seen."""
        if self.process is None or self.process.returncode is not None:
            return None
        last = self.stats()
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        return last


def service_env(
    *,
    backends: Backends,
    topics: Topics,
    database_url: str,
    encryption_key: str,
    run: str,
    extra: Mapping[str, str],
) -> dict[str, str]:
    return {
        "WEBHOOKS_KAFKA_BOOTSTRAP_SERVERS": backends.kafka,
        "WEBHOOKS_KAFKA_TOPICS": ",".join(topics.catalog.values()),
        "WEBHOOKS_KAFKA_DLQ_TOPIC": topics.dlq,
        "WEBHOOKS_KAFKA_GROUP_ID": f"bench-{run}",
        "WEBHOOKS_DATABASE_URL": database_url,
        "WEBHOOKS_ENCRYPTION_KEY": encryption_key,
        "WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true",
        "WEBHOOKS_LOG_LEVEL": "warning",
        "WEBHOOKS_LOG_FORMAT": "json",
        **extra,
    }


def new_run_id() -> str:
    return uuid.uuid4().hex[:10]


def new_encryption_key() -> str:
    return Fernet.generate_key().decode()
