"""`identity-webhooks redeliver` and `replay`: the operations of `service.operations.recovery`,
for operators. Nothing is sent from here: a running `serve` claims what is due within its poll."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from service.api.models import ReplayRequest, ReplayResult
from service.cli.errors import Refused, invalid, validated
from service.cli.output import print_json
from service.cli.run import subscription_of, with_store
from service.clock import iso, iso_or_none
from service.errors import CannotSend, PayloadRemoved
from service.operations import recovery
from service.settings import Settings
from service.store import Store


@with_store
async def redeliver(args: argparse.Namespace, _: Settings, store: Store) -> int:
    subscription = await subscription_of(store, args)
    try:
        await recovery.redeliver(store, subscription, args.delivery_id)
    except CannotSend as exc:
        raise Refused(f"cannot redeliver: {exc.reason}", 1) from None
    except PayloadRemoved as exc:
        raise Refused(str(exc), 1) from None
    print(f"{args.delivery_id} is due now: a running service sends it within its poll interval")
    return 0


@with_store
async def replay(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    request: dict[str, Any] = {"since": args.since, "onlyFailed": not args.all}
    if args.until is not None:
        request["until"] = args.until
    if args.events is not None:
        request["events"] = args.events
    body = validated(ReplayRequest, request)
    most = recovery.MAX_REPLAY
    limit = most if args.limit is None else args.limit
    if not 1 <= limit <= most:
        raise invalid([("limit", f"must be from 1 to {most}")])
    subscription = await subscription_of(store, args)
    ask = dataclasses.replace(body.ask(), limit=limit)
    try:
        replayed = await recovery.replay(store, subscription, ask, retention_s=settings.retention)
    except PayloadRemoved as exc:
        raise Refused(f"nothing to replay: {exc}", 1) from None
    if args.json:
        result = ReplayResult(
            count=replayed.count,
            nextSince=iso_or_none(replayed.next_since),
            withoutPayload=replayed.without_payload,
            filtered=replayed.filtered,
        )
        print_json(result.model_dump(mode="json"))
        return 0
    which = "failed deliveries" if body.onlyFailed else "deliveries"
    print(
        f"queued {replayed.count} {which} of {subscription.id} from {iso(replayed.since)} "
        f"to {iso(replayed.until)}"
    )
    if replayed.without_payload:
        print(
            f"left out {replayed.without_payload} events whose payloads are no longer kept "
            "(erased, or past WEBHOOKS_PAYLOAD_RETENTION)"
        )
    if replayed.filtered:
        print(f"left out {replayed.filtered} events its content filter refuses")
    if not subscription.active:
        print("the subscription is inactive: they wait until it is re-enabled", file=sys.stderr)
    if replayed.next_since is not None:
        print(f"cut short at {limit}: run again with --since {iso(replayed.next_since)}")
    return 0
