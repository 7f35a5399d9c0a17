"""`identity-webhooks subscriptions show`: one subscription as GET …/{id} shows it (its JSON
with --json): a sensitive static header by its name only, never its value; its endpoint
authentication without its secrets. `subscriptions filter`: its content filter, shown, set or
cleared (checked as PATCH …/{id} checks it)."""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from service.api.models import PatchSubscription
from service.api.subscriptionrows import subscription_row
from service.cli.errors import Refused, invalid, validated
from service.cli.output import print_json
from service.cli.run import cli_actor, subscription_of, with_store
from service.filters import describe
from service.settings import Settings
from service.store import Store, SubscriptionChanges

HIDDEN_VALUE = "(value hidden, write-only)"


@with_store
async def subscriptions(args: argparse.Namespace, _: Settings, store: Store) -> int:
    if args.action == "filter":
        return await _filter(args, store)
    subscription = await subscription_of(store, args)
    summary = await store.subscription_summaries([subscription.id])
    shown = subscription_row(subscription, summary[subscription.id]).model_dump(mode="json")
    if args.json:
        print_json(shown)
    else:
        _print_subscription(shown, subscription.org_id)
    return 0


def _print_subscription(row: dict[str, Any], org_id: str) -> None:
    state = "active" if row["active"] else f"inactive: {row['deactivatedReason'] or '-'}"
    last = row["lastDelivery"]
    lines = [
        ("subscription", row["id"]),
        ("org", org_id),
        ("url", row["url"]),
        ("events", ", ".join(row["events"])),
        ("state", state),
        ("installed by", row["installedBy"] or "-"),
        ("rate limit", "-" if row["rateLimit"] is None else f"{row['rateLimit']}/s"),
        ("ordering", row["ordering"]),
        ("data fields", "all" if row["dataFields"] is None else ", ".join(row["dataFields"])),
        ("filter", describe(row["filter"])),
        *(("header", f"{name}: {value}") for name, value in row["headers"].items()),
        *(("header", f"{name}: {HIDDEN_VALUE}") for name in row["sensitiveHeaders"]),
        *_auth_lines(row),
        ("deliveries", str(row["deliveryCount"])),
        ("last delivery", "-" if last is None else f"{last['status']} {last['at']}"),
        ("pending", str(row["pendingCount"])),
    ]
    if row["problem"]:
        lines.append(("problem", row["problem"]))
    for label, value in lines:
        print(f"{label + ':':<15}{value}")


async def _filter(args: argparse.Namespace, store: Store) -> int:
    subscription = await subscription_of(store, args)
    if args.filter is None and not args.clear:
        print(subscription.filter or "null")
        return 0
    document = None
    if not args.clear:
        try:
            document = orjson.loads(args.filter)
        except orjson.JSONDecodeError as exc:
            raise invalid([("filter", f"is not valid JSON: {exc.msg}")]) from None
    body = validated(PatchSubscription, {"filter": document})
    stored = None if body.filter is None else orjson.dumps(body.filter).decode()
    updated = await store.update_subscription(
        subscription.org_id,
        subscription.id,
        SubscriptionChanges(content_filter=stored),
        actor=cli_actor(),
    )
    if updated is None:
        raise Refused(f"no subscription {subscription.id}", 1)
    print(updated.filter or "null")
    return 0


def _auth_lines(row: dict[str, Any]) -> list[tuple[str, str]]:
    auth, ca = row["auth"], row["caCertificate"]
    lines: list[tuple[str, str]] = []
    if auth is None:
        lines.append(("endpoint auth", "none"))
    elif auth["type"] == "oauth2_client_credentials":
        scope = f", scope {auth['scope']}" if auth["scope"] else ""
        lines.append(
            (
                "endpoint auth",
                f"OAuth client {auth['clientId']} at {auth['tokenUrl']} "
                f"({auth['clientAuth']}{scope}; secret {HIDDEN_VALUE})",
            )
        )
    else:
        cert = auth["certificate"]
        lines.append(
            (
                "endpoint auth",
                f"mTLS {cert['subject']}, ends {cert['notAfter']} (key {HIDDEN_VALUE})",
            )
        )
    if ca is not None:
        lines.append(("own CA", f"{ca['subject']}, ends {ca['notAfter']}"))
    return lines
