"""`identity-webhooks deliveries list|show`: a subscription's delivery log, as
GET …/{id}/deliveries shows it (its JSON with --json)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from service.api.deliverylog import LOG_QUERY, LogQuery, delivery_detail, delivery_row
from service.api.models import DeliveryList
from service.api.paging import encode_cursor
from service.cli.errors import invalid
from service.cli.output import print_json, print_table
from service.cli.run import subscription_of, with_store
from service.clock import iso
from service.domain import DeliveryLogRow
from service.errors import DeliveryNotFound
from service.settings import Settings
from service.store import PageRequest, Store


@with_store
async def deliveries(args: argparse.Namespace, _: Settings, store: Store) -> int:
    if args.action == "show":
        return await _show(args, store)
    given = {name: value for name in LOG_QUERY if (value := getattr(args, name)) is not None}
    query = LogQuery(given)
    if query.errors:
        raise invalid(query.errors)
    subscription = await subscription_of(store, args)
    page = await store.list_deliveries(
        subscription.org_id, subscription.id, query.where, PageRequest(query.limit, query.after)
    )
    cursor = None if page.next_after is None else encode_cursor(page.next_after)
    if args.json:
        rows = DeliveryList.model_validate(
            {"rows": [delivery_row(row) for row in page.rows], "nextCursor": cursor}
        )
        print_json(rows.model_dump(mode="json"))
        return 0
    print_table(
        [("ID", "EVENT", "STATUS", "CREATED", "ATTEMPTS", "NEXT", "LAST")]
        + [_row_cells(row) for row in page.rows]
    )
    if cursor is not None:
        print(f"more: the next page is --cursor {cursor}", file=sys.stderr)
    return 0


async def _show(args: argparse.Namespace, store: Store) -> int:
    subscription = await subscription_of(store, args)
    detail = await store.get_delivery(subscription.org_id, subscription.id, args.delivery_id)
    if detail is None:
        raise DeliveryNotFound(subscription.id, args.delivery_id)
    shown = delivery_detail(detail, subscription.data_fields).model_dump(mode="json")
    if args.json:
        print_json(shown)
    else:
        _print_delivery(shown)
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
        iso(row.created_at),
        str(row.attempt_count),
        "-" if row.next_attempt_at is None else iso(row.next_attempt_at),
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
    if detail.get("cancelledReason"):
        print(f"{'cancelled:':<14}{detail['cancelledReason']}")
    if (removed := detail.get("payloadRemoved")) is not None:
        since = f" (since {removed['at']})" if removed["at"] else ""
        print(f"payload:      none: {removed['detail']}{since}")
        return
    print("payload:")
    print(orjson.dumps(detail["payload"], option=orjson.OPT_INDENT_2).decode())
