"""`identity-webhooks audit`: an org's audit trail, as GET /api/identity/audit shows it (its JSON
with --json)."""

from __future__ import annotations

import argparse
import sys

import orjson

from service.api.audit import AUDIT_QUERY, AuditQuery, audit_row
from service.api.models import AuditList
from service.api.paging import encode_cursor
from service.cli.errors import invalid
from service.cli.output import print_json, print_table
from service.cli.run import with_store
from service.clock import iso
from service.domain import AuditEntry
from service.settings import Settings
from service.store import PageRequest, Store


@with_store
async def audit(args: argparse.Namespace, _: Settings, store: Store) -> int:
    given = {name: value for name in AUDIT_QUERY if (value := getattr(args, name)) is not None}
    query = AuditQuery(given)
    if query.errors:
        raise invalid(query.errors)
    page = await store.list_audit(args.org, query.where, PageRequest(query.limit, query.after))
    cursor = None if page.next_after is None else encode_cursor(page.next_after)
    if args.json:
        rows = AuditList.model_validate(
            {"rows": [audit_row(entry) for entry in page.rows], "nextCursor": cursor}
        )
        print_json(rows.model_dump(mode="json"))
        return 0
    print_table(
        [("AT", "ACTOR", "ACTION", "OF", "CHANGES")] + [_cells(entry) for entry in page.rows]
    )
    if cursor is not None:
        print(f"more: the next page is --cursor {cursor}", file=sys.stderr)
    return 0


def _cells(entry: AuditEntry) -> tuple[str, ...]:
    actor = entry.actor
    who = actor.kind.value + "".join(f" {part}" for part in (actor.id, actor.name) if part)
    changes = orjson.dumps(entry.changes).decode() if entry.changes else "-"
    return (
        iso(entry.at),
        who,
        entry.action,
        entry.subscription_id or entry.api_key_id or "-",
        changes,
    )
