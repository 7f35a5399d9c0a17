"""The command line's arguments: every command, its options and its help text."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from service import ids
from service.cli import convert
from service.signing import DEFAULT_TOLERANCE


def build_parser() -> argparse.ArgumentParser:
    """Every command, its options and its help."""
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
    key = verify.add_mutually_exclusive_group(required=True)
    key.add_argument(
        "--secret",
        help="the signing secret, qe_whsec_… or its Standard Webhooks form whsec_…",
    )
    key.add_argument(
        "--public-key",
        help="an Ed25519 subscription's public key, whpk_… (checks webhook-signature's v1a)",
    )
    verify.add_argument(
        "--header",
        required=True,
        help="the X-Quantum-Signature (t=…,v1=…), X-Identity-Signature (sha256=…) or "
        "webhook-signature (v1,… or v1a,…, with --id and --timestamp) value",
    )
    verify.add_argument("--id", help="the webhook-id value (Standard Webhooks)")
    verify.add_argument("--timestamp", help="the webhook-timestamp value (Standard Webhooks)")
    verify.add_argument(
        "--body-file",
        required=True,
        type=Path,
        help="the raw request body exactly as received (- reads standard input)",
    )
    verify.add_argument(
        "--tolerance",
        type=convert.seconds,
        default=DEFAULT_TOLERANCE,
        help="seconds the timestamp may differ from now (default %(default)g)",
    )
    commands.add_parser(
        "migrate",
        help="bring the database schema up to date",
        description="Upgrade the schema of WEBHOOKS_DATABASE_URL to the newest revision; "
        "safe to repeat.",
    )
    _api_key_parser(commands)
    _audit_parser(commands)
    _recovery_parsers(commands)
    _rekey_parser(commands)
    _erase_parser(commands)
    _remote_parsers(commands)
    return parser


def _api_options(parser: argparse.ArgumentParser) -> None:
    """--api-url and --api-key, with their variables: the commands over the public API need no
    store and no settings."""
    parser.add_argument(
        "--api-url",
        default=os.environ.get("WEBHOOKS_API_URL"),
        help="the service, e.g. https://webhooks.example.com (default: $WEBHOOKS_API_URL)",
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("WEBHOOKS_API_KEY"), help="default: $WEBHOOKS_API_KEY"
    )


def _remote_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    listen = commands.add_parser(
        "listen",
        help="forward a polling subscription's deliveries to a local receiver",
        description="Creates (or reuses, by --name) a polling subscription through the API, "
        "reads it with a long poll and POSTs each delivery to --forward-to with exactly the "
        "body and headers a push would carry, printing a line per delivery with the local "
        "answer. The subscription stays when it stops: delete it through the API. Exits 1 when "
        "the API refuses the key or cannot be reached, or the local receiver refuses.",
    )
    _api_options(listen)
    listen.add_argument(
        "--forward-to", required=True, help="the local receiver, e.g. http://localhost:3000/hook"
    )
    listen.add_argument("--events", help="comma-separated events (default: every catalog event)")
    listen.add_argument(
        "--name", default="default", help="which listening subscription (default %(default)s)"
    )
    listen.add_argument(
        "--cursor-file",
        type=Path,
        help="where the cursor is kept between runs: a restart goes on from it",
    )
    trigger = commands.add_parser(
        "trigger",
        help="send a test event of any catalog type to a subscription",
        description="POST …/{id}/test with the event: the catalog's example with fresh ids, "
        'marked "test": true. Prints the result as JSON.',
    )
    _api_options(trigger)
    trigger.add_argument(
        "event",
        choices=(
            "webhook.test",
            "verification.created",
            "customer.kyc_updated",
            "review.overridden",
        ),
    )
    target = trigger.add_mutually_exclusive_group()
    target.add_argument("--subscription", help="its id, whk_…")
    target.add_argument(
        "--name", default="default", help="the subscription `listen --name` made (default)"
    )


def _audit_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser(
        "audit",
        help="an org's audit trail: every change to its subscriptions and API keys",
        description="The org's audit trail, newest first, as GET /api/identity/audit shows it: "
        "when, who (an API key, cli with the operating-system user, or system), what, and what "
        "changed (never a secret). When there are more, the next page's --cursor is printed "
        "on standard error. Exit 2 on bad input.",
    )
    audit.add_argument("--org", required=True, help="the org, e.g. org_demo")
    audit.add_argument("--since", type=convert.when, help=f"at or after: {_TIME_HELP}")
    audit.add_argument("--until", type=convert.when, help=f"before: {_TIME_HELP}")
    audit.add_argument(
        "--subscription", dest="subscriptionId", help="only the changes of this subscription"
    )
    audit.add_argument(
        "--action",
        help="only these actions, comma-separated (subscription.failing, "
        "subscription.disabled, subscription.recovered, subscription.updated…)",
    )
    audit.add_argument("--limit", help="rows per page, 1 to 100 (default 50)")
    audit.add_argument("--cursor", help="the next page, as printed by the previous one")
    audit.add_argument(
        "--json", action="store_true", help="print the management API's JSON instead"
    )


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


# A subscription, its delivery log and recovery, as the management API offers them, for operators.
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
        type=convert.id_of(ids.SUBSCRIPTION, "a subscription"),
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
        type=convert.id_of(ids.DELIVERY, "a delivery"),
        help="the delivery, whd_…",
    )

    subscriptions = commands.add_parser(
        "subscriptions",
        help="a subscription as the management API shows it",
        description="Read a subscription, as GET …/{id} does.",
    )
    subscription_actions = subscriptions.add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    subscription_actions.add_parser(
        "show",
        parents=[subscription, as_json],
        help="its settings and its deliveries at a glance",
        description="The subscription: its URL, events, state, limits, the data fields it "
        "receives and its static headers (a sensitive header by name only: its value is "
        f"write-only); with --json the API's row. {_EXITS}",
    )
    content_filter = subscription_actions.add_parser(
        "filter",
        parents=[subscription],
        help="show, set or clear its content filter",
        description="Without an option, print the subscription's content filter as JSON "
        "(null: every event of its types). --set replaces it, checked as PATCH …/{id} checks "
        "it; --clear removes it. Running services match with the change within "
        f"WEBHOOKS_INDEX_REFRESH (default 2s). {_EXITS}",
    )
    change = content_filter.add_mutually_exclusive_group()
    change.add_argument(
        "--set",
        metavar="JSON",
        dest="filter",
        help='the filter, e.g. \'{"data": {"status": {"$in": ["rejected", "requires_review"]}}}\'',
    )
    change.add_argument("--clear", action="store_true", help="remove the filter")

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
    listing.add_argument("--status", help="pending, retrying, sent, failed or cancelled")
    listing.add_argument("--event", help="one event name of the catalog, or webhook.test")
    listing.add_argument("--since", type=convert.when, help=f"created at or after: {_TIME_HELP}")
    listing.add_argument("--until", type=convert.when, help=f"created before: {_TIME_HELP}")
    listing.add_argument("--event-id", dest="eventId", help="only the delivery of this event")
    listing.add_argument(
        "--customer-id", dest="customerId", help="only deliveries of events about this customer"
    )
    listing.add_argument(
        "--verification-id",
        dest="verificationId",
        help="only deliveries of events about this verification",
    )
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
        "--since",
        type=convert.when,
        required=True,
        help=f"from (within the retention): {_TIME_HELP}",
    )
    replay.add_argument(
        "--until", type=convert.when, help=f"up to, excluded (default now): {_TIME_HELP}"
    )
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
        type=convert.count,
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


def _rekey_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rekey = commands.add_parser(
        "rekey",
        help="seal again what an older key (or an older revision, in clear) wrote",
        description="Seal with the first key of WEBHOOKS_ENCRYPTION_KEY every value another "
        "configured key sealed, and every value an older revision kept in clear (event bodies, "
        "response excerpts, header values, signing secrets; customer ids become keyed hashes). "
        "Each batch is its own transaction: safe beside running services, and resumable (a "
        "second run does only what is left). Progress goes to standard error. Exit 0 when "
        "every value opens with the configured keys; 1 when some do not (they are left as "
        "they are: configure the key that sealed them, after the first, and run it again).",
    )
    rekey.add_argument(
        "--batch",
        type=convert.whole_number(1, 10_000),
        default=500,
        help="rows per transaction, 1 to 10000 (default %(default)s)",
    )
    rekey.add_argument(
        "--status",
        action="store_true",
        help="change nothing: count the sealed values by the key that sealed them (a full "
        "scan); exit 1 when some were sealed with a key that is not configured",
    )
    rekey.add_argument("--json", action="store_true", help="print one JSON document instead")


def _erase_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    erase = commands.add_parser(
        "erase",
        help="erase one customer's stored payloads in an org",
        description="Remove the payloads of ORG's retained events about CUSTOMER_ID (their "
        "data.customerId) and the response excerpts of their deliveries, keeping their "
        "metadata, and cancel their open deliveries; they cannot be sent again. Other orgs' "
        "events are untouched; events about the customer that arrive later are delivered as "
        "usual. A repeat finds the same events and deliveries and cancels nothing more. "
        "The receipt is printed without the customer id (--json prints the API's receipt, "
        "which holds it). Exit 2 on bad input. It cannot be undone: run --dry-run first.",
    )
    erase.add_argument("--org", required=True, help="the org whose data about the customer goes")
    erase.add_argument(
        "customer_id",
        metavar="CUSTOMER_ID",
        help="the customer's id as the events carry it, at most 200 characters (one that "
        "starts with - goes after --)",
    )
    erase.add_argument(
        "--dry-run", action="store_true", help="only count what would be erased and cancelled"
    )
    erase.add_argument(
        "--json", action="store_true", help="print the management API's JSON receipt instead"
    )
