"""Operational events and the audit trail in SQL: an operational event recorded and fanned out to
the org's subscribers of its type (never to the subscription it is about) inside the caller's
transaction, so it commits with the change that caused it or not at all; audit entries written
the same way, listed per org newest first, and purged after their own retention, never the
delivery log's (docs/decisions/0015-operational-events-and-audit.md)."""

from __future__ import annotations

from collections import Counter

import orjson

from service.domain import Actor, ActorKind, AuditEntry, AuditFilter, DeliveryMode, NewDelivery
from service.operational import OperationalEvent
from service.store.interfaces import Page, PageRequest
from service.store.sql.base import Conn, Row, SqlBase
from service.store.sql.deliveryrows import insert_deliveries, insert_polled
from service.store.sql.summaries import add_counts
from service.summaries import DELIVERIES

SOURCE = "operational"
"""The `source` of an operational event's row."""
_AUDIT_COLUMNS = (
    "id, org_id, at, actor_kind, actor_id, actor_name, action, subscription_id, api_key_id, changes"
)
# The org's active subscriptions, other than its subject, that take an operational event:
# $1 the org, $2 the subject, $3 the type as its stored `events` list spells it, in a LIKE.
_SUBSCRIBERS = (
    "SELECT id, delivery FROM subscriptions WHERE org_id = $1 AND active "
    "AND deleted_at IS NULL AND id <> $2 AND events LIKE $3 ORDER BY id"
)


class OperationalSql(SqlBase):
    """Records operational events and audit entries in a transaction the caller holds; lists
    and purges the audit trail (`interfaces.Audit`)."""

    async def _emit(
        self, conn: Conn, event: OperationalEvent, *, audit: AuditEntry | None = None
    ) -> list[str]:
        """Records `event` and a delivery to each active subscription of its org that takes its
        type, but not to its subject, in the transaction `conn`; returns the ids of the
        deliveries that are new. Found by the org's index on subscriptions (an org has few),
        the type matched in the stored `events` list. A repeat of the same event (same id)
        adds nothing. `audit`, the entry of the same cause, is appended to the trail first
        (on PostgreSQL by the statement that finds the subscribers: one round trip)."""
        subscribers_of = (event.org_id, event.subject, f'%"{event.event}"%')
        if audit is not None and self._driver.writes_in_with:
            subscribers = await conn.fetch(
                f"WITH audited AS ({_insert_audit(first=4)}) {_SUBSCRIBERS}",
                *subscribers_of,
                *_audit_values(audit),
            )
        else:
            if audit is not None:
                await self._audit(conn, audit)
            subscribers = await conn.fetch(_SUBSCRIBERS, *subscribers_of)
        if not subscribers:
            return []
        now = self._now()
        await conn.execute(
            "INSERT INTO events (id, org_id, event, occurred_at, body, source, received_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (org_id, id) DO NOTHING",
            event.id,
            event.org_id,
            event.event,
            event.at,
            self._seal_body(event.org_id, event.id, event.body),
            SOURCE,
            now,
        )
        deliveries = [
            NewDelivery(
                event.delivery_id(row["id"]),
                event.id,
                row["id"],
                event.event,
                event.org_id,
                poll=row["delivery"] == DeliveryMode.POLL.value,
            )
            for row in subscribers
        ]
        created: set[str] = set()
        if pushed := [d for d in deliveries if not d.poll]:
            # Unleased and due now: whichever replica's claimer polls next sends them.
            created |= await insert_deliveries(self._driver, conn, [(d, None) for d in pushed], now)
        if polled := [d for d in deliveries if d.poll]:
            created |= await insert_polled(self._driver, conn, polled, now)
        await add_counts(
            self._driver,
            conn,
            Counter((d.subscription_id, now, DELIVERIES) for d in deliveries if d.id in created),
        )
        return sorted(created)

    async def _audit(self, conn: Conn, entry: AuditEntry) -> None:
        """Appends `entry` to its org's audit trail in the transaction `conn` (a repeat of the
        same id adds nothing)."""
        await conn.execute(_insert_audit(first=1), *_audit_values(entry))

    async def list_audit(
        self, org_id: str, where: AuditFilter, page_of: PageRequest
    ) -> Page[AuditEntry]:
        conditions = ["org_id = $1", "id < $2"]
        args: list[object] = [org_id, page_of.after or "~", page_of.limit + 1]
        if where.subscription_id is not None:
            args.append(where.subscription_id)
            conditions.append(f"subscription_id = ${len(args)}")
        if where.since is not None:
            args.append(where.since)
            conditions.append(f"at >= ${len(args)}")
        if where.until is not None:
            args.append(where.until)
            conditions.append(f"at < ${len(args)}")
        if where.actions:
            args.append(self._driver.list_param(where.actions))
            conditions.append(f"action {self._driver.in_list(f'${len(args)}')}")
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_AUDIT_COLUMNS} FROM audit_log WHERE {' AND '.join(conditions)} "
                "ORDER BY id DESC LIMIT $3",
                *args,
            )
        entries = [_entry(row) for row in rows[: page_of.limit]]
        more = len(rows) > page_of.limit
        return Page(entries, entries[-1].id if more else None)

    async def purge_audit(self, before: int, batch: int) -> int:
        async with self._transaction() as conn:
            return await conn.execute(
                "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at < $1 "
                "ORDER BY at LIMIT $2)",
                before,
                batch,
            )


def _entry(row: Row) -> AuditEntry:
    return AuditEntry(
        id=row["id"],
        org_id=row["org_id"],
        at=row["at"],
        actor=Actor(ActorKind(row["actor_kind"]), row["actor_id"], row["actor_name"]),
        action=row["action"],
        subscription_id=row["subscription_id"],
        api_key_id=row["api_key_id"],
        changes=orjson.loads(row["changes"]),
    )


def _insert_audit(*, first: int) -> str:
    """An audit entry appended (a repeat of its id adds nothing); its values
    (`_audit_values`) are the parameters from `$first` on."""
    values = ", ".join(f"${first + i}" for i in range(len(_AUDIT_COLUMNS.split(", "))))
    return f"INSERT INTO audit_log ({_AUDIT_COLUMNS}) VALUES ({values}) ON CONFLICT (id) DO NOTHING"


def _audit_values(entry: AuditEntry) -> tuple[object, ...]:
    return (
        entry.id,
        entry.org_id,
        entry.at,
        entry.actor.kind.value,
        entry.actor.id,
        entry.actor.name,
        entry.action,
        entry.subscription_id,
        entry.api_key_id,
        orjson.dumps(entry.changes).decode(),
    )
