"""The `identity-webhooks` command line (SPEC section 6)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import structlog

from service.errors import SignatureError
from service.events import CATALOG, format_time
from service.logging import configure_logging
from service.samples import poison_records, record_key, sample_event
from service.settings import Settings, SettingsError, load_settings
from service.signing import DEFAULT_TOLERANCE, verify_signature

if TYPE_CHECKING:
    from service.store.models import ApiKey

log = structlog.get_logger(__name__)

Command = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and of `python -m service`."""
    args = _parser().parse_args(argv)
    command: Command = _COMMANDS[args.command]
    return command(args)


def _with_settings(run: Callable[[argparse.Namespace, Settings], int]) -> Command:
    """A command that needs the `WEBHOOKS_*` settings and logging; the others start without them."""

    def command(args: argparse.Namespace) -> int:
        try:
            settings = load_settings()
        except SettingsError as exc:
            print(exc, file=sys.stderr)
            return 2
        configure_logging(settings.log_format, settings.log_level)
        return run(args, settings)

    return command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="identity-webhooks",
        description="Deliver Identity Platform events from Kafka as signed webhooks.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the API, the consumer and the dispatcher")
    serve.add_argument(
        "--no-consumer", action="store_true", help="no Kafka consumer: API and dispatch only"
    )
    serve.add_argument(
        "--no-api", action="store_true", help="no management API: consumer and dispatch only"
    )
    verify = commands.add_parser(
        "verify",
        help="check a webhook signature, as a receiver would",
        description="Exit 0 and print `ok` when the signature is valid; exit 1 with the reason on "
        "stderr when it is not; exit 2 on a usage error (e.g. the body file cannot be read).",
    )
    verify.add_argument("--secret", required=True, help="the signing secret, qe_whsec_…")
    verify.add_argument(
        "--header",
        required=True,
        help="the X-Quantum-Signature (t=…,v1=…) or X-Identity-Signature (sha256=…) value",
    )
    verify.add_argument(
        "--body-file",
        required=True,
        type=Path,
        help="the raw request body exactly as received (- reads standard input)",
    )
    verify.add_argument(
        "--tolerance",
        type=_seconds,
        default=DEFAULT_TOLERANCE,
        help="seconds t= may differ from now (default %(default)g)",
    )
    commands.add_parser(
        "migrate",
        help="bring the database schema up to date",
        description="Upgrade the schema of WEBHOOKS_DATABASE_URL to the newest revision; "
        "safe to repeat.",
    )
    _api_key_parser(commands)
    _produce_parser(commands)
    return parser


def _api_key_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    api_key = commands.add_parser(
        "api-key",
        help="create, list or revoke management API keys",
        description="Management API keys; each belongs to one org and sees only its subscriptions.",
    )
    actions = api_key.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create",
        help="create a key and print it once",
        description="Create a key for ORG. The key is shown once, alone on the last line of "
        "standard output (`| tail -1` takes it); only its hash is stored.",
    )
    create.add_argument("--org", required=True, help="the org the key acts for, e.g. org_demo")
    create.add_argument("--name", help="a label to recognise the key by in `api-key list`")
    actions.add_parser("list", help="list the keys (never the keys themselves)")
    revoke = actions.add_parser(
        "revoke",
        help="revoke a key at once",
        description="Exit 0 when the key is revoked, 1 when no active key has this id.",
    )
    revoke.add_argument("key_id", metavar="ID", help="the key's id, key_…, from `api-key list`")


def _produce_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    produce = commands.add_parser(
        "produce",
        help="publish sample catalog events to Kafka, for demos and load",
        description="Publish events shaped like the seed page's examples, with fresh ids and "
        "occurredAt = the time of sending, each to the topic of WEBHOOKS_KAFKA_TOPICS that ends "
        "with its event name, keyed by customerId. Without --event the catalog events take "
        "turns, so the default --count 3 is the seed page's three examples.",
    )
    produce.add_argument(
        "--count", type=_count, default=3, help="events to publish (default %(default)s)"
    )
    produce.add_argument(
        "--rate",
        type=_rate,
        default=0.0,
        help="events per second on an open schedule, event i sent at start + i/RATE "
        "(default 0: as fast as the broker takes them)",
    )
    produce.add_argument("--org", default="org_demo", help="the events' orgId (%(default)s)")
    produce.add_argument(
        "--event",
        action="append",
        choices=CATALOG,
        dest="events",
        metavar="NAME",
        help="publish only this event; repeat for several (default: the whole catalog)",
    )
    produce.add_argument(
        "--sibling-service",
        metavar="NAME",
        help="add the x-sibling-service header, as another product's events carry it",
    )
    produce.add_argument(
        "--invalid",
        type=_count,
        default=0,
        metavar="N",
        help="also publish N records of different kinds that must be dead-lettered",
    )


def _count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = -1
    if count < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number, zero or more")
    return count


def _rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        rate = -1.0
    if not 0 <= rate < float("inf"):  # also refuses NaN
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate in events per second, 0 or more")
    return rate


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds, zero or more")
    return seconds


def _verify(args: argparse.Namespace) -> int:
    path: Path = args.body_file
    try:
        body = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except OSError as exc:
        print(f"cannot read the body: {exc}", file=sys.stderr)
        return 2
    try:
        verify_signature(args.secret, args.header, body, tolerance=args.tolerance)
    except SignatureError as exc:
        print(exc, file=sys.stderr)
        return 1
    print("ok")
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here so that light commands such as `verify` start without the whole service.
    from aiohttp import web  # noqa: PLC0415

    from service.app import FATAL, Roles, create_app  # noqa: PLC0415

    roles = Roles(api=not args.no_api, consumer=not args.no_consumer)

    async def run() -> int:
        app = create_app(settings, roles)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # Before start-up, so a SIGTERM during it still ends in an orderly cleanup.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        fatal = app[FATAL]
        try:
            await runner.setup()
            site = web.TCPSite(runner, settings.http_host, settings.http_port)
            await site.start()
            log.info("http.listening", host=settings.http_host, port=settings.http_port)
            stopped = asyncio.create_task(stop.wait())
            failed = asyncio.create_task(fatal.event.wait())
            await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            failed.cancel()
            log.info("service.stopping", reason=fatal.reason or "signal")
        except OSError as exc:
            log.error("service.start_failed", error=str(exc))
            return 1
        finally:
            await runner.cleanup()
        return 1 if fatal.reason else 0

    return asyncio.run(run())


def _migrate(_: argparse.Namespace, settings: Settings) -> int:
    from service.store import migrate  # noqa: PLC0415 - Alembic only for the commands that use it

    before, after = asyncio.run(migrate(settings.database_url))
    print(f"schema at revision {after} (was {before or 'none'})")
    return 0


def _api_key(args: argparse.Namespace, settings: Settings) -> int:
    from service.store import open_store  # noqa: PLC0415

    async def run() -> int:
        store = await open_store(settings)
        try:
            if args.action == "create":
                record, key = await store.create_api_key(args.org, args.name)
                named = f" ({record.name})" if record.name else ""
                print(
                    f"created API key {record.id}{named} for {record.org_id}, "
                    f"prefix {record.prefix}; it is shown once, below",
                    file=sys.stderr,
                )
                print(key)
                return 0
            if args.action == "list":
                _print_keys(await store.list_api_keys())
                return 0
            if await store.revoke_api_key(args.key_id):
                print(f"revoked {args.key_id}")
                return 0
            print(f"no active API key has the id {args.key_id!r}", file=sys.stderr)
            return 1
        finally:
            await store.close()

    return asyncio.run(run())


def _print_keys(keys: Sequence[ApiKey]) -> None:
    rows = [("ID", "ORG", "NAME", "PREFIX", "CREATED", "REVOKED")]
    rows += [
        (
            key.id,
            key.org_id,
            key.name or "-",
            key.prefix + "…",
            _rfc3339(key.created_at),
            "-" if key.revoked_at is None else _rfc3339(key.revoked_at),
        )
        for key in keys
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _rfc3339(epoch_ms: int) -> str:
    return format_time(datetime.fromtimestamp(epoch_ms / 1000, UTC))


Record = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]
"""What `produce` sends: topic, key, value, headers."""


def _produce(args: argparse.Namespace, settings: Settings) -> int:
    events: list[str] = list(dict.fromkeys(args.events or CATALOG))
    topics: dict[str, str] = {}
    for event in events:
        topic = _topic_for(event, settings.kafka_topics)
        if topic is None:
            print(
                f"no topic in WEBHOOKS_KAFKA_TOPICS ({','.join(settings.kafka_topics)}) "
                f"ends with {event!r}",
                file=sys.stderr,
            )
            return 2
        topics[event] = topic
    headers = (
        [] if not args.sibling_service else [("x-sibling-service", args.sibling_service.encode())]
    )

    def records() -> Iterator[Record]:
        for i in range(args.count):
            envelope = sample_event(events[i % len(events)], args.org, datetime.now(UTC))
            yield topics[envelope["event"]], record_key(envelope), orjson.dumps(envelope), headers
        poisons = poison_records(
            args.invalid, args.org, datetime.now(UTC), events, settings.max_event_bytes
        )
        for poison in poisons:
            yield topics[poison.event], poison.key, poison.value, headers

    return asyncio.run(_publish(settings, records(), args.count, args.invalid, args.rate))


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _topic_for(event: str, topics: Sequence[str]) -> str | None:
    """The configured topic named for `event`: `identity.verification.created` for
    `verification.created`, or any topic that ends with `.<event>`."""
    for topic in topics:
        if topic == event or topic.endswith("." + event):
            return topic
    return None


async def _publish(
    settings: Settings, records: Iterator[Record], events: int, invalid: int, rate: float
) -> int:
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415
    from aiokafka.errors import KafkaError  # noqa: PLC0415

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id="identity-webhooks-produce",
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
        # A poison record of --invalid may be just over WEBHOOKS_MAX_EVENT_BYTES.
        max_request_size=max(1024 * 1024, settings.max_event_bytes * 2),
    )
    try:
        await producer.start()
    except KafkaError as exc:
        await producer.stop()
        print(f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}", file=sys.stderr)
        return 1
    pending: set[asyncio.Future[object]] = set()
    failures: list[BaseException] = []

    def settled(future: asyncio.Future[object]) -> None:
        pending.discard(future)
        error = None if future.cancelled() else future.exception()
        if error is not None:
            failures.append(error)

    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    start = loop.time()
    try:
        for i, (topic, key, value, headers) in enumerate(records):
            if rate:
                # Open model: record i leaves at start + i/rate, however long earlier sends took.
                delay = start + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            try:
                future = await producer.send(topic, value=value, key=key, headers=headers)
            except KafkaError as exc:
                failures.append(exc)
                continue
            pending.add(future)
            future.add_done_callback(settled)
        if pending:
            await asyncio.wait(list(pending))
    finally:
        await producer.stop()
    elapsed = time.perf_counter() - started
    total = events + invalid
    if failures:
        print(
            f"{len(failures)} of {total} records were not produced in {elapsed:.2f} s; "
            f"the first error: {failures[0]!r}",
            file=sys.stderr,
        )
        return 1
    extra = f" and {_plural(invalid, 'invalid record')}" if invalid else ""
    rate_done = total / max(elapsed, 1e-6)
    print(f"produced {_plural(events, 'event')}{extra} in {elapsed:.2f} s ({rate_done:.0f}/s)")
    return 0


_COMMANDS: dict[str, Command] = {
    "serve": _with_settings(_serve),
    "migrate": _with_settings(_migrate),
    "api-key": _with_settings(_api_key),
    "produce": _with_settings(_produce),
    "verify": _verify,
}
