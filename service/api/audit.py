"""The audit trail of the caller's org (`GET /api/identity/audit`): every change to its
subscriptions and API keys, newest first, a page at a time, narrowed by time and subscription.
Read-only: entries are written by the store in the transaction of each change, and the API has
no way to add, change or remove one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from service import ids
from service.api.auth import ORG
from service.api.deliverylog import query_time
from service.api.models import AuditList, Errors
from service.api.paging import decode_cursor, encode_cursor, page_limit
from service.api.problems import invalid
from service.appkeys import STORE
from service.clock import iso
from service.domain import AuditEntry, AuditFilter
from service.operational import AUDIT, AUDIT_ACTIONS
from service.store import PageRequest

if TYPE_CHECKING:
    from service.store import Audit

AUDIT_PATH = "/api/identity/audit"
AUDIT_QUERY = ("since", "until", "subscriptionId", "action", "limit", "cursor")
AUDIT_POSITION = ids.shape(AUDIT)
_SUBSCRIPTION = ids.shape(ids.SUBSCRIPTION)


class AuditQuery:
    """The audit trail's query (the API's query string, the command line's options), checked."""

    def __init__(self, query: Mapping[str, str]) -> None:
        self.errors: Errors = [
            (name, "unknown query parameter") for name in query if name not in AUDIT_QUERY
        ]
        self.limit = page_limit(query, self.errors)
        self.after: str | None = None
        if "cursor" in query:
            try:
                self.after = decode_cursor(query["cursor"], AUDIT_POSITION)
            except ValueError as exc:
                self.errors.append(("cursor", str(exc)))
        subscription_id = query.get("subscriptionId")
        if subscription_id is not None and not _SUBSCRIPTION.fullmatch(subscription_id):
            self.errors.append(("subscriptionId", "is not a subscription id (whk_…)"))
            subscription_id = None
        actions: tuple[str, ...] = ()
        if "action" in query:
            actions = tuple(sorted({a.strip() for a in query["action"].split(",")}))
            if unknown := [a for a in actions if a not in AUDIT_ACTIONS]:
                self.errors.append(
                    (
                        "action",
                        f"unknown: {', '.join(unknown)[:200]} (one of {', '.join(AUDIT_ACTIONS)})",
                    )
                )
                actions = ()
        self.where = AuditFilter(
            since=query_time(query, "since", self.errors),
            until=query_time(query, "until", self.errors),
            subscription_id=subscription_id,
            actions=actions,
        )


def audit_row(entry: AuditEntry) -> dict[str, Any]:
    """One entry as the API and the command line show it (`AuditRow`)."""
    return {
        "id": entry.id,
        "at": iso(entry.at),
        "actor": entry.actor.document(),
        "action": entry.action,
        "subscriptionId": entry.subscription_id,
        "apiKeyId": entry.api_key_id,
        "changes": entry.changes,
    }


class AuditApi:
    """The audit trail's one route."""

    def routes(self) -> list[web.RouteDef]:
        return [web.get(AUDIT_PATH, self.list)]

    async def list(self, request: web.Request) -> web.Response:
        query = AuditQuery(request.query)
        if query.errors:
            return invalid(query.errors)
        store: Audit = request.config_dict[STORE]
        page = await store.list_audit(
            request[ORG], query.where, PageRequest(query.limit, query.after)
        )
        body = AuditList.model_validate(
            {
                "rows": [audit_row(entry) for entry in page.rows],
                "nextCursor": None if page.next_after is None else encode_cursor(page.next_after),
            }
        )
        return web.Response(
            body=orjson.dumps(body.model_dump(mode="json")), content_type="application/json"
        )
