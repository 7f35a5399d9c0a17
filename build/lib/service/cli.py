"""The `identity-webhooks` command line (SPEC section 6): argument parsing, and a call into the
module that does each command's work."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from service import ids
from service.errors import SignatureError
from service.events import CATALOG, format_time
from service.logging import configure_logging
from service.settings import Settings, SettingsError, load_settings, parse_duration
from service.signing import DEFAULT_TOLERANCE, verify_signature

if TYPE_CHECKING:
    from service.store import Store
    from service.store.models import ApiKey, DeliveryLogRow, Subscription

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
    _recovery_parsers(commands)
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


# The delivery log and recovery (issue 12), as the management API offers them, for operators.
_ORG_HELP = (
    "the subscription's org (optional: ids are unique across orgs, so without it the "
    "subscription is looked up in whichever org holds it; with it, another org's "
    "subscription is not found, as in the API)"
)
_PICKED_UP = (
    "Nothing is sent from here: the deliveries are made due now in the store, and a running "
    "`identity-webhooks serve` claims them within its WEBHOOKS_POLL_INTERVAL (default 1s)."
)
_EXITS = "Exit 2 on bad input, 1 when the subscription or delivery is not found."
_TIME_HELP = "an RFC 3339 time (2026-05-24T08:15:00Z) or a duration ago (30m, 2h, 7d)"


def _recovery_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    subscription = argparse.ArgumentParser(add_help=False)
    subscription.add_argument(
        "subscription_id",
        metavar="SUBSCRIPTION_ID",
        type=_id_of(ids.SUBSCRIPTION, "a subscription"),
        help="the subscription, whk_…",
    )
    subscription.add_argument("--org", help=_ORG_HELP)
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument(
        "--json", action="store_true", help="print the management API's JSON instead"
    )
    delivery = argparse.ArgumentParser(add_help=False)
    delivery.add_argument(
        "delivery_id",
        metavar="DELIVERY_ID",
        type=_id_of(ids.DELIVERY, "a delivery"),
        help="the delivery, whd_…",
    )

    deliveries = commands.add_parser(
        "deliveries",
        help="a subscription's delivery log",
        description="Read a subscription's deliveries, as GET …/{id}/deliveries does.",
    )
    actions = deliveries.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list",
        parents=[subscription, as_json],
        help="its deliveries, newest first",
        description="The subscription's deliveries, newest first, as a table; with --json the "
        "API's {rows, nextCursor}. When there are more, the next page's --cursor is printed "
        f"on standard error. {_EXITS}",
    )
    listing.add_argument("--status", help="pending, retrying, sent or failed")
    listing.add_argument("--event", help="one event name of the catalog, or webhook.test")
    listing.add_argument("--since", type=_when, help=f"created at or after: {_TIME_HELP}")
    listing.add_argument("--until", type=_when, help=f"created before: {_TIME_HELP}")
    listing.add_argument("--limit", help="rows per page, 1 to 100 (default 50)")
    listing.add_argument("--cursor", help="the next page, as printed by the previous one")
    actions.add_parser(
        "show",
        parents=[subscription, delivery, as_json],
        help="one delivery: its payload and attempts",
        description=f"One delivery with the envelope it sends and its attempts. {_EXITS}",
    )
    commands.add_parser(
        "redeliver",
        parents=[subscription, delivery],
        help="send one delivery again",
        description="One more attempt at a delivery (sent, failed or still open), same "
        f"delivery id, signed afresh. {_PICKED_UP} {_EXITS} Exit 1 too when the "
        "subscription is inactive or its secret cannot be decrypted.",
    )
    replay = commands.add_parser(
        "replay",
        parents=[subscription, as_json],
        help="send a window of past events again",
        description="Queue again the subscription's deliveries of the events that occurred in "
        "[--since, --until): by default only its failed ones; with --all its sent ones too, "
        "and new deliveries of retained events it never had. What is open already is left "
        f"alone. {_PICKED_UP} An inactive subscription's replayed deliveries wait until it is "
        "re-enabled. When --limit cuts the window short, the --since to run again with is "
        f"printed. {_EXITS}",
    )
    replay.add_argument(
        "--since", type=_when, required=True, help=f"from (within the retention): {_TIME_HELP}"
    )
    replay.add_argument("--until", type=_when, help=f"up to, excluded (default now): {_TIME_HELP}")
    replay.add_argument(
        "--event",
        action="append",
        dest="events",
        metavar="NAME",
        help="replay only this event; repeat for several (default: the subscription's events)",
    )
    replay.add_argument(
        "--all", action="store_true", help="not only the failed deliveries (onlyFailed false)"
    )
    replay.add_argument(
        "--limit",
        type=_count,
        help="queue at most this many, 1 or more (default and most: one API call's bound, 10,000)",
    )
    rotate = commands.add_parser(
        "rotate-secret",
        parents=[subscription],
        help="give a subscription a new signing secret",
        description="A new signing secret, shown once, alone on the last line of standard "
        "output (`| tail -1` takes it); when the previous one stops signing is said on "
        "standard error. Running services sign with both (the previous one until then) within "
        f"WEBHOOKS_INDEX_REFRESH (default 2s). {_EXITS}",
    )
    rotate.add_argument(
        "--overlap",
        metavar="DURATION",
        help="how long the previous secret keeps signing too, whole seconds up to 7d, e.g. "
        "12h; 0 ends it now (default 1d)",
    )


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


def _id_of(prefix: str, what: str) -> Callable[[str], str]:
    def convert(text: str) -> str:
        if not ids.looks_like(text, prefix):
            raise argparse.ArgumentTypeError(f"{text[:64]!r} is not {what} id ({prefix}_…)")
        return text

    return convert


def _when(text: str) -> str:
    """An RFC 3339 time as given (checked where the API checks it), or a duration ago as one."""
    try:
        ago = parse_duration(text)
    except ValueError:
        return text
    try:
        return format_time(datetime.now(UTC) - timedelta(seconds=ago))
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{text!r} is too long ago") from None


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
    _print_table(rows)


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    """Left-aligned columns two spaces apart; the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _rfc3339(epoch_ms: int) -> str:
    return format_time(datetime.fromtimestamp(epoch_ms / 1000, UTC))


# -- the delivery log and recovery ------------------------------------------------------------


class _Refused(Exception):
    """What the command cannot do, said in one line, and its exit code (2: bad input, 1: not
    found or not possible now)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


_OPTIONS = {
    "since": "--since",
    "until": "--until",
    "events": "--event",
    "event": "--event",
    "status": "--status",
    "limit": "--limit",
    "cursor": "--cursor",
    "onlyFailed": "--all",
    "overlapSeconds": "--overlap",
}


def _invalid(errors: Sequence[tuple[str, str]]) -> _Refused:
    """The API's (field, message) errors, with the fields named as this command's options."""

    def option(field: str) -> str:
        name, _, rest = field.partition("[")
        return _OPTIONS.get(name, name) + (f"[{rest}" if rest else "")

    return _Refused("; ".join(f"{option(field)}: {message}" for field, message in errors), 2)


StoreCommand = Callable[[argparse.Namespace, Settings, "Store"], Awaitable[int]]


def _with_store(run: StoreCommand) -> Command:
    """A command over the store of the `WEBHOOKS_*` settings: what it refuses is one line on
    standard error, never a traceback."""

    def command(args: argparse.Namespace, settings: Settings) -> int:
        from service.store import StoreUnavailable, open_store  # noqa: PLC0415

        async def go() -> int:
            store = await open_store(settings)
            try:
                return await run(args, settings, store)
            finally:
                await store.close()

        words = ("identity-webhooks", args.command, getattr(args, "action", None))
        name = " ".join(word for word in words if word)
        try:
            return asyncio.run(go())
        except _Refused as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return exc.code
        except (StoreUnavailable, OSError) as exc:
            print(f"{name}: the database is away: {exc}", file=sys.stderr)
            return 1

    return _with_settings(command)


async def _subscription(store: Store, args: argparse.Namespace) -> Subscription:
    """The subscription of SUBSCRIPTION_ID, in --org when given, else in whichever org."""
    subscription_id: str = args.subscription_id
    if args.org is None:
        found = await store.find_subscription(subscription_id)
    else:
        found = await store.get_subscription(args.org, subscription_id)
    if found is None:
        where = "" if args.org is None else f" in {args.org}"
        raise _Refused(f"no subscription {subscription_id}{where}", 1)
    return found


def _print_json(value: Any) -> None:
    print(orjson.dumps(value).decode())


async def _deliveries(args: argparse.Namespace, _: Settings, store: Store) -> int:
    from service.api.models import DeliveryList  # noqa: PLC0415
    from service.api.paging import encode_cursor  # noqa: PLC0415
    from service.api.recovery import (  # noqa: PLC0415
        LOG_QUERY,
        LogQuery,
        delivery_detail,
        delivery_row,
    )

    if args.action == "show":
        subscription = await _subscription(store, args)
        detail = await store.get_delivery(subscription.org_id, subscription.id, args.delivery_id)
        if detail is None:
            raise _Refused(f"no delivery {args.delivery_id} of {subscription.id}", 1)
        shown = delivery_detail(detail)
        if args.json:
            _print_json(shown.model_dump(mode="json"))
        else:
            _print_delivery(shown.model_dump(mode="json"))
        return 0

    given = {name: value for name in LOG_QUERY if (value := getattr(args, name)) is not None}
    query = LogQuery(given)
    if query.errors:
        raise _invalid(query.errors)
    subscription = await _subscription(store, args)
    page = await store.list_deliveries(
        subscription.org_id, subscription.id, query.where, query.limit, query.after
    )
    cursor = None if page.next_after is None else encode_cursor(page.next_after)
    if args.json:
        rows = DeliveryList.model_validate(
            {"rows": [delivery_row(row) for row in page.rows], "nextCursor": cursor}
        )
        _print_json(rows.model_dump(mode="json"))
        return 0
    _print_table(
        [("ID", "EVENT", "STATUS", "CREATED", "ATTEMPTS", "NEXT", "LAST")]
        + [_row_cells(row) for row in page.rows]
    )
    if cursor is not None:
        print(f"more: the next page is --cursor {cursor}", file=sys.stderr)
    return 0


def _row_cells(row: DeliveryLogRow) -> tuple[str, ...]:
    last = row.last_attempt
    if last is None:
        outcome = "-"
    elif last.error:
        outcome = last.error if len(last.error) <= 60 else last.error[:59] + "…"
    else:
        outcome = str(last.response_code)
    return (
        row.id,
        row.event,
        row.status.value,
        _rfc3339(row.created_at),
        str(row.attempt_count),
        "-" if row.next_attempt_at is None else _rfc3339(row.next_attempt_at),
        outcome,
    )


def _print_delivery(detail: dict[str, Any]) -> None:
    for label, value in (
        ("delivery", detail["id"]),
        ("event", f"{detail['event']} {detail['eventId']}"),
        ("status", detail["status"]),
        ("created", detail["createdAt"]),
        ("attempts", detail["attemptCount"]),
        ("next attempt", detail["nextAttemptAt"] or "-"),
    ):
        print(f"{label + ':':<14}{value}")
    for attempt in detail["attempts"]:
        outcome = attempt["error"] or attempt["responseCode"]
        print(f"attempt {attempt['number']}:".ljust(14), end="")
        print(f"{attempt['at']}  {outcome}  {attempt['durationMs']} ms")
        if attempt["responseExcerpt"]:
            print(f"{'':14}{attempt['responseExcerpt']!r}")
    print("payload:")
    print(orjson.dumps(detail["payload"], option=orjson.OPT_INDENT_2).decode())


async def _redeliver(args: argparse.Namespace, _: Settings, store: Store) -> int:
    from service.api.recovery import cannot_send  # noqa: PLC0415

    subscription = await _subscription(store, args)
    org, delivery_id = subscription.org_id, args.delivery_id
    if not await store.get_delivery(org, subscription.id, delivery_id):
        raise _Refused(f"no delivery {delivery_id} of {subscription.id}", 1)
    if blocked := cannot_send(subscription):
        raise _Refused(f"cannot redeliver: {blocked[1]}", 1)
    if not await store.redeliver(org, subscription.id, delivery_id):
        raise _Refused(f"no delivery {delivery_id} of {subscription.id}", 1)
    log.info("delivery.redeliver", subscription_id=subscription.id, delivery_id=delivery_id)
    print(f"{delivery_id} is due now: a running service sends it within its poll interval")
    return 0


async def _replay(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    from pydantic import ValidationError  # noqa: PLC0415

    from service.api.models import ReplayRequest, ReplayResult  # noqa: PLC0415
    from service.api.recovery import (  # noqa: PLC0415
        MAX_REPLAY,
        field_messages,
        iso,
        iso_or_none,
        replay_window,
    )
    from service.clock import now_ms  # noqa: PLC0415

    request: dict[str, Any] = {"since": args.since, "onlyFailed": not args.all}
    if args.until is not None:
        request["until"] = args.until
    if args.events is not None:
        request["events"] = args.events
    try:
        body = ReplayRequest.model_validate(request)
    except ValidationError as exc:
        raise _invalid(field_messages(exc)) from None
    limit = MAX_REPLAY if args.limit is None else args.limit
    if not 1 <= limit <= MAX_REPLAY:
        raise _invalid([("limit", f"must be from 1 to {MAX_REPLAY}")])
    subscription = await _subscription(store, args)
    window = replay_window(subscription, body, now=now_ms(), retention_s=settings.retention)
    if isinstance(window, list):
        raise _invalid(window)
    replayed = await store.replay(
        subscription.org_id,
        subscription,
        window.events,
        window.since,
        window.until,
        only_failed=body.onlyFailed,
        limit=limit,
    )
    log.info(
        "subscription.replay",
        subscription_id=subscription.id,
        queued=replayed.count,
        only_failed=body.onlyFailed,
        cut_short=replayed.next_since is not None,
    )
    if args.json:
        result = ReplayResult(count=replayed.count, nextSince=iso_or_none(replayed.next_since))
        _print_json(result.model_dump(mode="json"))
        return 0
    which = "failed deliveries" if body.onlyFailed else "deliveries"
    print(
        f"queued {replayed.count} {which} of {subscription.id} from {iso(window.since)} "
        f"to {iso(window.until)}"
    )
    if not subscription.active:
        print("the subscription is inactive: they wait until it is re-enabled", file=sys.stderr)
    if replayed.next_since is not None:
        print(f"cut short at {limit}: run again with --since {iso(replayed.next_since)}")
    return 0


async def _rotate_secret(args: argparse.Namespace, _: Settings, store: Store) -> int:
    from pydantic import ValidationError  # noqa: PLC0415

    from service.api.models import RotateSecret  # noqa: PLC0415
    from service.api.recovery import field_messages, iso  # noqa: PLC0415

    request: dict[str, Any] = {}
    if args.overlap is not None:
        try:
            seconds = parse_duration(args.overlap)
        except ValueError as exc:
            raise _invalid([("overlapSeconds", str(exc))]) from None
        if not seconds.is_integer():
            raise _invalid([("overlapSeconds", "must be whole seconds")])
        request["overlapSeconds"] = int(seconds)
    try:
        body = RotateSecret.model_validate(request)
    except ValidationError as exc:
        raise _invalid(field_messages(exc)) from None
    subscription = await _subscription(store, args)
    rotated = await store.rotate_secret(
        subscription.org_id, subscription.id, body.overlapSeconds * 1000
    )
    if rotated is None or rotated.secret is None:
        raise _Refused(f"no subscription {subscription.id}", 1)
    log.info(
        "subscription.secret_rotated",
        subscription_id=rotated.id,
        overlap_seconds=body.overlapSeconds,
    )
    expires = iso(rotated.previous_secret_until or rotated.updated_at)
    print(
        f"rotated the signing secret of {rotated.id} ({rotated.org_id}); the previous one "
        f"signs too until {expires}; the new one is shown once, below",
        file=sys.stderr,
    )
    print(rotated.secret)
    return 0


def _produce(args: argparse.Namespace, settings: Settings) -> int:
    from service.produce import Plan, produce  # noqa: PLC0415 - aiokafka only when producing

    plan = Plan(**{name: getattr(args, name) for name in Plan.__dataclass_fields__})
    return asyncio.run(produce(settings, plan))


_COMMANDS: dict[str, Command] = {
    "serve": _with_settings(_serve),
    "migrate": _with_settings(_migrate),
    "api-key": _with_settings(_api_key),
    "produce": _with_settings(_produce),
    "deliveries": _with_store(_deliveries),
    "redeliver": _with_store(_redeliver),
    "replay": _with_store(_replay),
    "rotate-secret": _with_store(_rotate_secret),
    "verify": _verify,
}
