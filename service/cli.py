"""The `identity-webhooks` command line (SPEC section 6): argument parsing, and a call into the
module that does each command's work."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from service.errors import SignatureError
from service.events import CATALOG, format_time
from service.logging import configure_logging
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


def _number(parse: Callable[[str], float], *, what: str, finite: bool = True) -> Any:
    """An argparse type: `parse`d, zero or more (NaN refused), finite when asked."""

    def convert(text: str) -> float:
        try:
            value = parse(text)
        except ValueError:
            value = -1
        if not 0 <= value <= (sys.float_info.max if finite else float("inf")):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return convert


_count = _number(int, what="a whole number, zero or more")
_rate = _number(float, what="a rate in events per second, 0 or more")
_seconds = _number(float, what="a number of seconds, zero or more", finite=False)


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
    from service.app import Roles, serve  # noqa: PLC0415

    return asyncio.run(serve(settings, Roles(api=not args.no_api, consumer=not args.no_consumer)))


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


def _produce(args: argparse.Namespace, settings: Settings) -> int:
    from service.produce import Plan, produce  # noqa: PLC0415 - aiokafka only when producing

    plan = Plan(**{name: getattr(args, name) for name in Plan.__dataclass_fields__})
    return asyncio.run(produce(settings, plan))


_COMMANDS: dict[str, Command] = {
    "serve": _with_settings(_serve),
    "migrate": _with_settings(_migrate),
    "api-key": _with_settings(_api_key),
    "produce": _with_settings(_produce),
    "verify": _verify,
}
