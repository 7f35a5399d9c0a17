"""Subscriptions in SQL: their rows (secrets and header values sealed by the key ring), changes
that every subscription index learns of through the revision, taking one down (deleted or
deactivated) with its open deliveries, secret rotation, and what the index and the gauges
read."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson
import structlog

from service import credentials, endpointauth, ids, operational
from service.domain import (
    SYSTEM,
    Actor,
    AuditEntry,
    DeliveryMode,
    EndpointAuth,
    Ordering,
    Signing,
    Subscription,
)
from service.errors import InvalidInput
from service.headers import Patch as HeadersPatch
from service.headers import merge as merge_headers
from service.signing import KeyPair
from service.store.crypto import Undecryptable
from service.store.interfaces import (
    UNSET,
    ChangedSubscriptions,
    Page,
    Sealed,
    SubscriptionChanges,
)
from service.store.sql.base import (
    BUMPED,
    NEW_STAMP,
    OPEN,
    REVISION,
    Conn,
    Row,
    as_dict,
    auth_context,
    bump_revision,
    filter_context,
    headers_context,
    hold_revision,
    secret_context,
    signing_key_context,
)
from service.store.sql.operational import OperationalSql

log = structlog.get_logger(__name__)

_CHUNK = 100  # rows made subscriptions between two yields to the loop (a few ms)

_COLUMNS = (
    "id, org_id, url, events, installed_by, secret_enc, active, deactivated_reason, "
    "created_at, updated_at, failing_since, previous_secret_enc, previous_secret_until, "
    "rate_limit, headers, disabled_at, consecutive_failures, ordering, data_fields, signing, "
    "signing_key_enc, previous_signing_key_enc, public_key, hmac_headers, content_filter, auth, "
    "ca_certificate, delivery, updated_by"
)
# What a PATCH's audit entry shows old values of (service.operational.PLAIN).
_PLAIN_NAMES = (
    "url",
    "events",
    "active",
    "installed_by",
    "rate_limit",
    "ordering",
    "data_fields",
    "signing",
    "hmac_headers",
)
_PLAIN_COLUMNS = ", ".join(_PLAIN_NAMES)
# The same, read as they were by a change's own statement (`_change`), under other names.
_OLD_COLUMNS = ", ".join(f"{name} AS old_{name}" for name in _PLAIN_NAMES)
_OLD_NAMES = ", ".join(f"old.old_{name}" for name in _PLAIN_NAMES)
# A deleted subscription's endpoint credentials go with it: nothing will use them again.
_DELETE = (
    "UPDATE subscriptions SET deleted_at = $2, active = false, updated_at = $2, auth = NULL, "
    "updated_by = $4 WHERE id = $1 AND org_id = $3 AND deleted_at IS NULL RETURNING org_id, url"
)
# Its streak is announced (`disabled`): the next success owes a `recovered`.
_DEACTIVATE = (
    "UPDATE subscriptions SET active = false, deactivated_reason = $3, updated_at = $2, "
    "disabled_at = $2, alerted_at = COALESCE(alerted_at, $2), updated_by = $4 "
    "WHERE id = $1 AND active AND deleted_at IS NULL RETURNING org_id, url"
)
# What `_unopened` leaves sealed, in `Sealed.values`' order.
_SEALED = (
    "secret_enc",
    "previous_secret_enc",
    "headers",
    "auth",
    "signing_key_enc",
    "previous_signing_key_enc",
)
_KEY_COLUMNS = ("signing_key_enc", "public_key", "previous_signing_key_enc")
PAUSED = "paused through the API (PATCH active: false)"


class _Changed(NamedTuple):
    """A subscription as a change left it, and its plain settings as they were before."""

    now: Subscription
    before: dict[str, Any]


class SubscriptionsSql(OperationalSql):
    """`interfaces.Subscriptions`, and the subscription reads and writes of the pipeline."""

    def _subscription(self, row: Row) -> Subscription:
        """A row as a subscription, every sealed value opened."""
        return self.open_subscription(*self._unopened(row))

    def _unopened(self, row: Row) -> tuple[Subscription, Sealed]:
        """A row as a subscription with its secrets, header values and credentials left sealed
        (what the index keeps until a delivery needs them), and those sealed values. Only the
        content filter is opened: matching needs it."""
        row = as_dict(row)  # thirty columns read by name
        content_filter = self._open_filter(row["id"], row["content_filter"])
        values = tuple(row[column] for column in _SEALED)
        sealed = Sealed(
            values,
            unreadable=content_filter is False
            or not all(self._keyring.may_open(value) for value in values if value is not None),
            filter_unreadable=content_filter is False,
            authenticated=row["auth"] is not None,
        )
        subscription = Subscription(
            id=row["id"],
            org_id=row["org_id"],
            url=row["url"],
            events=tuple(orjson.loads(row["events"])),
            installed_by=row["installed_by"],
            active=bool(row["active"]),
            deactivated_reason=row["deactivated_reason"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            failing_since=row["failing_since"],
            secret=None,
            previous_secret_until=row["previous_secret_until"],
            rate_limit=row["rate_limit"],
            disabled_at=row["disabled_at"],
            consecutive_failures=row["consecutive_failures"],
            ordering=Ordering(row["ordering"]),
            data_fields=None
            if row["data_fields"] is None
            else tuple(orjson.loads(row["data_fields"])),
            signing=Signing(row["signing"]),
            public_key=None if row["public_key"] is None else base64.b64decode(row["public_key"]),
            hmac_headers=bool(row["hmac_headers"]),
            filter=content_filter if isinstance(content_filter, str) else None,
            ca_certificate=row["ca_certificate"],
            delivery=DeliveryMode(row["delivery"]),
            updated_by=row["updated_by"],
        )
        return subscription, sealed

    def open_subscription(self, subscription: Subscription, sealed: Sealed) -> Subscription:
        subscription_id = subscription.id
        secret_enc, previous_enc, headers_enc, auth_enc, key_enc, previous_key_enc = sealed.values
        context = secret_context(subscription_id)
        assert secret_enc is not None
        secret = self._keyring.open_text_or_none(secret_enc, context)
        headers = self._open_headers(subscription_id, headers_enc)
        try:
            auth = self._open_auth(subscription_id, auth_enc)
        except Undecryptable:
            headers = None
        content_filter = subscription.filter
        if headers is None or sealed.filter_unreadable:
            # Sent without its headers or credentials a delivery would fail at the receiver's
            # gateway, or worse, be taken; matched without its filter it would reach a receiver
            # that does not want it: it waits with the subscription's secret unreadable
            # instead.
            secret, headers, content_filter, auth = None, (), None, None
        signing_key = self._open_key(subscription_id, key_enc)
        if key_enc is not None and signing_key is None:
            secret = None  # an Ed25519 subscription cannot sign without its key: it waits too
        return dataclasses.replace(
            subscription,
            secret=secret,
            previous_secret=None
            if previous_enc is None
            else self._keyring.open_text_or_none(previous_enc, context),
            headers=headers,
            signing_key=signing_key,
            previous_signing_key=self._open_key(subscription_id, previous_key_enc),
            filter=content_filter,
            auth=auth,
        )

    def _open_key(self, subscription_id: str, sealed: str | None) -> bytes | None:
        """An Ed25519 private key's seed; None when there is none or no configured key opens
        it."""
        if sealed is None:
            return None
        opened = self._keyring.open_text_or_none(sealed, signing_key_context(subscription_id))
        return None if opened is None else base64.b64decode(opened)

    def _seal_key(self, subscription_id: str, pair: KeyPair) -> tuple[str, str]:
        """A key pair as stored: the private seed sealed, the public key in clear (base64)."""
        private = base64.b64encode(pair.private).decode()
        sealed = self._keyring.seal_text(private, signing_key_context(subscription_id))
        return sealed, base64.b64encode(pair.public).decode()

    def _seal_filter(self, subscription_id: str, document: str | None) -> str | None:
        """A content filter as stored: its compact JSON, sealed (it may name a customer)."""
        if document is None:
            return None
        return self._keyring.seal_text(document, filter_context(subscription_id))

    def _open_filter(self, subscription_id: str, stored: str | None) -> str | bool | None:
        """The content filter's JSON; None without one, False when no configured key opens
        it."""
        if stored is None:
            return None
        opened = self._keyring.open_text_or_none(stored, filter_context(subscription_id))
        return False if opened is None else opened

    def _open_auth(self, subscription_id: str, stored: str | None) -> EndpointAuth | None:
        """The endpoint authentication, None without one; raises `Undecryptable` when no
        configured key opens it."""
        if stored is None:
            return None
        return endpointauth.loads(self._keyring.open_text(stored, auth_context(subscription_id)))

    def _seal_auth(self, subscription_id: str, auth: EndpointAuth | None) -> str | None:
        """Endpoint authentication as stored: one JSON object, credentials and all, sealed."""
        if auth is None:
            return None
        return self._keyring.seal_text(endpointauth.dumps(auth), auth_context(subscription_id))

    def _seal_headers(self, subscription_id: str, headers: Sequence[tuple[str, str]]) -> str | None:
        """Static headers as stored: their names and values, as one sealed JSON object."""
        if not headers:
            return None
        plain = orjson.dumps(dict(headers)).decode()
        return self._keyring.seal_text(plain, headers_context(subscription_id))

    def _open_headers(
        self, subscription_id: str, stored: str | None
    ) -> tuple[tuple[str, str], ...] | None:
        """The static headers; None when no configured key opens them. An older revision
        kept them in clear (a JSON object) until `rekey` seals them."""
        if stored is None:
            return ()
        plain = self._open_headers_json(subscription_id, stored)
        return None if plain is None else tuple(orjson.loads(plain).items())

    async def create_subscription(
        self,
        org_id: str,
        url: str,
        events: Sequence[str],
        installed_by: str | None,
        *,
        rate_limit: int | None = None,
        headers: Sequence[tuple[str, str]] = (),
        ordering: Ordering = Ordering.NONE,
        data_fields: Sequence[str] | None = None,
        signing: Signing = Signing.HMAC,
        hmac_headers: bool = True,
        content_filter: str | None = None,
        auth: EndpointAuth | None = None,
        ca_certificate: str | None = None,
        delivery: DeliveryMode = DeliveryMode.PUSH,
        actor: Actor = SYSTEM,
    ) -> Subscription:
        options = {
            "rate_limit": rate_limit is not None,
            "headers": bool(headers),
            "ordering": ordering is not Ordering.NONE,
            "data_fields": data_fields is not None,
            "signing": signing is not Signing.HMAC,
            "hmac_headers": not hmac_headers,
            "content_filter": content_filter is not None,
            "auth": auth is not None,
            "ca_certificate": ca_certificate is not None,
        }
        subscription_id = ids.new_id(ids.SUBSCRIPTION)
        sealed_key, public_key = (
            self._seal_key(subscription_id, KeyPair.generate())
            if signing is Signing.ED25519
            else (None, None)
        )
        async with self._transaction() as conn:
            # Stamped once every write matched without it has committed, and before any that
            # could: an event that occurred from `created_at` on is matched with it.
            await hold_revision(self._driver, conn)
            now = self._now()
            stamped = self._driver.writes_in_with
            row = await _insert(
                conn,
                "subscriptions",
                _COLUMNS,
                stamped=stamped,
                id=subscription_id,
                org_id=org_id,
                url=url,
                events=orjson.dumps(list(events)).decode(),
                installed_by=installed_by,
                secret_enc=self._keyring.seal_text(
                    credentials.new_secret(), secret_context(subscription_id)
                ),
                active=True,
                created_at=now,
                updated_at=now,
                rate_limit=rate_limit,
                headers=self._seal_headers(subscription_id, headers),
                ordering=ordering,
                data_fields=_data_fields(data_fields),
                signing=signing,
                signing_key_enc=sealed_key,
                public_key=public_key,
                hmac_headers=hmac_headers,
                content_filter=self._seal_filter(subscription_id, content_filter),
                auth=self._seal_auth(subscription_id, auth),
                ca_certificate=ca_certificate,
                delivery=delivery,
                updated_by=actor.label,
            )
            if delivery is DeliveryMode.POLL:
                await conn.execute(
                    "INSERT INTO poll_feeds (subscription_id, top, acked) VALUES ($1, 0, 0)",
                    subscription_id,
                )
            if not stamped:
                await bump_revision(self._driver, conn, [subscription_id])
            changes = operational.created_changes(
                url, events, delivery.value, [name for name, set_ in options.items() if set_]
            )
            about = operational.About(subscription_id, org_id, url)
            await self._changed(conn, about, "created", actor=actor, changes=changes, at=now)
        return self._subscription(row)

    async def get_subscription(self, org_id: str, subscription_id: str) -> Subscription | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM subscriptions "
                "WHERE id = $1 AND org_id = $2 AND deleted_at IS NULL",
                subscription_id,
                org_id,
            )
        return None if row is None else self._subscription(row)

    async def find_subscription(self, subscription_id: str) -> Subscription | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM subscriptions WHERE id = $1 AND deleted_at IS NULL",
                subscription_id,
            )
        return None if row is None else self._subscription(row)

    async def list_subscriptions(
        self, org_id: str, limit: int, after: str | None, *, search: str | None = None
    ) -> Page[Subscription]:
        where, args = "", []
        if search is not None:
            # The id itself, or a part of the URL, its case ignored (the org's own rows only:
            # its index narrows the scan to them).
            where = " AND (id = $4 OR lower(url) LIKE $5 ESCAPE '\\')"
            args = [search, "%" + _like_escaped(search.lower()) + "%"]
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM subscriptions "
                "WHERE org_id = $1 AND deleted_at IS NULL AND id > $2"
                f"{where} ORDER BY id LIMIT $3",
                org_id,
                after or "",
                limit + 1,
                *args,
            )
        subscriptions = [self._subscription(row) for row in rows[:limit]]
        more = len(rows) > limit
        return Page(subscriptions, subscriptions[-1].id if more else None)

    async def update_subscription(
        self,
        org_id: str,
        subscription_id: str,
        changes: SubscriptionChanges,
        *,
        actor: Actor = SYSTEM,
        push_only: bool = False,
    ) -> Subscription | None:
        asked = changes.given()
        given = dict(asked)
        if "events" in given:
            given["events"] = orjson.dumps(list(given["events"])).decode()
        if "data_fields" in given:
            given["data_fields"] = _data_fields(given["data_fields"])
        if "content_filter" in given:
            given["content_filter"] = self._seal_filter(subscription_id, given["content_filter"])
        patch = given.pop("headers", UNSET)
        auth = given.pop("auth", UNSET)
        assignments = [f"{column} = ${n}" for n, column in enumerate(given, start=4)]
        extra: list[Any] = []  # values of the assignments below, numbered after `given`'s
        if "signing" in given:
            assignments += self._signing_switch(given["signing"], 4 + len(given))
            if given["signing"] is Signing.ED25519:
                extra += self._seal_key(subscription_id, KeyPair.generate())
        assignments.append(f"updated_by = ${len(given) + len(extra) + 4}")
        extra.append(actor.label)
        if patch is not UNSET:
            assignments.append(f"headers = ${len(given) + len(extra) + 4}")
        if auth is not UNSET:
            assignments.append(f"auth = ${len(given) + len(extra) + 4 + (patch is not UNSET)}")
        if given.get("active") is True:
            # Reactivating starts a fresh failure clock and clears the old reason.
            assignments += [
                "deactivated_reason = NULL",
                "failing_since = NULL",
                "disabled_at = NULL",
                "consecutive_failures = 0",
            ]
        elif given.get("active") is False:
            # Paused by its owner: said so, unless the service had deactivated it already.
            assignments += [
                "disabled_at = COALESCE(disabled_at, $3)",
                f"deactivated_reason = COALESCE(deactivated_reason, '{PAUSED}')",
                # Announced (`disabled`): the first success once resumed owes a `recovered`.
                "alerted_at = COALESCE(alerted_at, $3)",
            ]
        now = self._now()
        async with self._transaction() as conn:
            args = [now, *given.values(), *extra]
            if patch is not UNSET:
                # Merged with the stored headers in this transaction, their row locked until
                # it ends: a concurrent PATCH of other headers waits, and is then merged with
                # this one's result instead of being overwritten.
                stored = await conn.fetchrow(
                    "SELECT headers FROM subscriptions "
                    "WHERE id = $1 AND org_id = $2 AND deleted_at IS NULL "
                    f"{self._driver.lock_row}",
                    subscription_id,
                    org_id,
                )
                if stored is None:
                    return None
                args.append(self._merged_headers(subscription_id, stored["headers"], patch))
            if auth is not UNSET:
                if not endpointauth.keeps_secret(auth):
                    args.append(self._seal_auth(subscription_id, auth))
                elif (kept := await self._kept_secret(conn, org_id, subscription_id, auth)) is None:
                    return None
                else:
                    args.append(kept)
            changed = await self._change(
                conn,
                org_id,
                subscription_id,
                ", ".join(["updated_at = $3", *assignments]),
                *args,
                only=f"delivery = '{DeliveryMode.PUSH.value}'" if push_only else None,
            )
            if changed is None:
                return None
            updated, before = changed
            about = operational.About(subscription_id, org_id, updated.url)
            changes_made = operational.update_changes(before, asked)
            await self._changed(conn, about, "updated", actor=actor, changes=changes_made, at=now)
            if asked.get("active") is False and before["active"]:
                await self._emit(conn, operational.disabled(about, PAUSED, actor, now))
            return updated

    @staticmethod
    def _signing_switch(signing: Signing, first: int) -> list[str]:
        """The assignments of a PATCH of `signing`: to Ed25519, a new key pair (its sealed
        private key and public key are parameters `first` and `first + 1`) unless it signed so
        already; to HMAC, no key pair. Both sides of each read the row as it was."""
        if signing is Signing.HMAC:
            return [f"{column} = NULL" for column in _KEY_COLUMNS]
        kept = "signing = 'ed25519'"
        return [
            f"signing_key_enc = CASE WHEN {kept} THEN signing_key_enc ELSE ${first} END",
            f"public_key = CASE WHEN {kept} THEN public_key ELSE ${first + 1} END",
            f"previous_signing_key_enc = CASE WHEN {kept} THEN previous_signing_key_enc END",
        ]

    def _merged_headers(
        self, subscription_id: str, stored: str | None, patch: HeadersPatch | None
    ) -> str | None:
        """The stored headers after the PATCH's merge patch, sealed; `InvalidInput` when the
        result is over the limits or the stored ones cannot be opened to merge with."""
        current = () if patch is None else self._open_headers(subscription_id, stored)
        if current is None:
            raise InvalidInput(
                [
                    (
                        "headers",
                        "the stored header values cannot be decrypted with the configured "
                        'keys: send "headers": null to remove them, then set them again',
                    )
                ]
            )
        try:
            merged = merge_headers(current, patch)
        except ValueError as exc:
            raise InvalidInput([("headers", str(exc))]) from None
        return self._seal_headers(subscription_id, merged)

    async def _kept_secret(
        self, conn: Conn, org_id: str, subscription_id: str, auth: EndpointAuth
    ) -> str | None:
        """A PATCH's `auth` that leaves its client secret out, sealed with the stored one's,
        read in this transaction with the row locked (a concurrent PATCH waits, as for
        headers). None when the subscription is not there; `InvalidInput` when there is no
        secret to keep."""
        stored = await conn.fetchrow(
            "SELECT auth FROM subscriptions WHERE id = $1 AND org_id = $2 AND deleted_at IS NULL "
            f"{self._driver.lock_row}",
            subscription_id,
            org_id,
        )
        if stored is None:
            return None
        try:
            whole = endpointauth.merged(self._open_auth(subscription_id, stored["auth"]), auth)
        except Undecryptable:
            raise InvalidInput(
                [("auth.clientSecret", "the stored one cannot be decrypted: give it again")]
            ) from None
        except ValueError as exc:
            raise InvalidInput([("auth.clientSecret", str(exc))]) from None
        sealed = self._seal_auth(subscription_id, whole)
        assert sealed is not None
        return sealed

    async def _change(
        self,
        conn: Conn,
        org_id: str,
        subscription_id: str,
        assignments: str,
        *args: Any,
        only: str | None = None,
    ) -> _Changed | None:
        """Sets `assignments` ($3… are `args`) on the org's subscription, if it is not
        deleted (and meets the condition `only`), and bumps the revision every index follows,
        in the transaction `conn`; returns the row as it is now and its plain settings as they
        were (`_plain_row`)."""
        found = "id = $1 AND org_id = $2 AND deleted_at IS NULL" + (f" AND {only}" if only else "")
        if self._driver.writes_in_with:
            # One round trip: the row locked and read as it was, changed, the revision moved
            # and the row stamped with it. The row's lock is taken before the revision's, as a
            # deletion's and a deactivation's are (a change that finds no row moves the
            # revision for nothing: no index misses one).
            row = await conn.fetchrow(
                f"{BUMPED}UPDATE subscriptions SET {assignments}, change_seq = {NEW_STAMP} "
                f"FROM (SELECT id AS old_id, {_OLD_COLUMNS} FROM subscriptions "
                f"WHERE {found} FOR UPDATE) old "
                f"WHERE id = old.old_id RETURNING {_COLUMNS}, {_OLD_NAMES}",
                subscription_id,
                org_id,
                *args,
            )
            if row is None:
                return None
            before = {name: row["old_" + name] for name in _PLAIN_NAMES}
            return _Changed(self._subscription(row), _plain_row(before))
        before_row = await conn.fetchrow(
            f"SELECT {_PLAIN_COLUMNS} FROM subscriptions WHERE {found}", subscription_id, org_id
        )
        row = await conn.fetchrow(
            f"UPDATE subscriptions SET {assignments} WHERE {found} RETURNING {_COLUMNS}",
            subscription_id,
            org_id,
            *args,
        )
        if row is None or before_row is None:
            return None
        await bump_revision(self._driver, conn, [subscription_id])
        return _Changed(self._subscription(row), _plain_row(before_row))

    async def delete_subscription(
        self, org_id: str, subscription_id: str, *, actor: Actor = SYSTEM
    ) -> bool:
        now = self._now()
        async with self._transaction() as conn:
            row = await conn.fetchrow(_DELETE, subscription_id, now, org_id, actor.label)
            if row is None:
                return False
            await self._close_open(conn, subscription_id, "cancelled", "subscription deleted", now)
            about = operational.About(subscription_id, org_id, row["url"])
            await self._changed(conn, about, "deleted", actor=actor, changes={}, at=now)
        return True

    async def deactivate_subscription(self, subscription_id: str, reason: str) -> bool:
        """Its open deliveries fail, `disabled` (by `system`, with the reason) goes to the
        org's other subscriptions, and the audit trail says so, all in one transaction."""
        ended = f"subscription deactivated: {reason}"[:500]
        now = self._now()
        async with self._transaction() as conn:
            row = await conn.fetchrow(_DEACTIVATE, subscription_id, now, reason, SYSTEM.label)
            if row is None:
                return False
            await self._close_open(conn, subscription_id, "failed", ended, now)
            about = operational.About(subscription_id, row["org_id"], row["url"])
            event = operational.disabled(about, reason, SYSTEM, now)
            entry = operational.system_entry(event, "subscription.disabled", {"reason": reason})
            await self._emit(conn, event, audit=entry)
        return True

    async def _changed(
        self,
        conn: Conn,
        about: operational.About,
        action: str,
        *,
        actor: Actor,
        changes: dict[str, Any],
        at: int,
    ) -> None:
        """A change by `actor` in the transaction `conn`: its audit entry, and `changed` to the
        org's other subscriptions (the entry's id is the event's cause)."""
        entry_id = ids.new_id(operational.AUDIT)
        entry = AuditEntry(
            entry_id, about.org_id, at, actor, f"subscription.{action}", about.id, None, changes
        )
        await self._emit(
            conn,
            operational.changed(about, action, actor, changes=changes, at=at, cause=entry_id),
            audit=entry,
        )

    async def rotate_secret(
        self, org_id: str, subscription_id: str, overlap_ms: int, *, actor: Actor = SYSTEM
    ) -> Subscription | None:
        now = self._now()
        ed25519 = "signing = 'ed25519'"
        keep, until = (
            (
                "previous_secret_enc = secret_enc, previous_secret_until = $5, "
                f"previous_signing_key_enc = CASE WHEN {ed25519} THEN signing_key_enc END",
                [now + overlap_ms],
            )
            if overlap_ms > 0
            else (
                "previous_secret_enc = NULL, previous_secret_until = NULL, "
                "previous_signing_key_enc = NULL",
                [],
            )
        )
        # An Ed25519 subscription gets a new key pair too ($6, $7 after the overlap's $5; an
        # HMAC one keeps none). Both sides of every assignment read the row as it was: the old
        # secret and key move over.
        first = 5 + len(until)
        sealed_key, public_key = self._seal_key(subscription_id, KeyPair.generate())
        async with self._transaction() as conn:
            changed = await self._change(
                conn,
                org_id,
                subscription_id,
                f"secret_enc = $3, updated_at = $4, {keep}, "
                f"signing_key_enc = CASE WHEN {ed25519} THEN ${first} END, "
                f"public_key = CASE WHEN {ed25519} THEN ${first + 1} END, "
                f"updated_by = ${first + 2}",
                self._keyring.seal_text(credentials.new_secret(), secret_context(subscription_id)),
                now,
                *until,
                sealed_key,
                public_key,
                actor.label,
            )
            if changed is not None:
                rotated = changed.now
                about = operational.About(subscription_id, org_id, rotated.url)
                changes = {"overlapSeconds": overlap_ms // 1000, "signing": rotated.signing.value}
                await self._changed(
                    conn, about, "secret_rotated", actor=actor, changes=changes, at=now
                )
            return None if changed is None else changed.now

    async def _close_open(
        self, conn: Conn, subscription_id: str, status: str, error: str, now: int
    ) -> None:
        """A subscription went away (deleted or deactivated): its open deliveries (and the
        unread ones of its feed) end as `status` with `error`, their leases dropped, and every
        index learns of the change."""
        await hold_revision(self._driver, conn)
        await conn.execute(
            "UPDATE deliveries SET status = $2, updated_at = $3, lease_owner = NULL, "
            "lease_until = NULL, last_error = $4 WHERE subscription_id = $1 "
            f"AND ({OPEN} OR status = 'available')",
            subscription_id,
            status,
            now,
            error,
        )
        await bump_revision(self._driver, conn, [subscription_id])

    async def subscriptions_revision(self) -> int:
        async with self._connection() as conn:
            # Waits for a change in flight (`hold_revision`): what this answers is committed.
            row = await conn.fetchrow(f"{REVISION} {self._driver.share_row}")
        return 0 if row is None else int(row["value"])

    async def changed_subscriptions(self, after: int) -> ChangedSubscriptions:
        # A read in the store's thread (a first load may be every subscription), and rows made
        # objects a chunk at a time, the loop free in between; their secrets stay sealed until
        # a delivery needs them (`open_subscription`).
        async with self._scan() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS}, change_seq, deleted_at FROM subscriptions "
                "WHERE change_seq > $1 ORDER BY change_seq",
                after,
            )
        live: list[Subscription] = []
        sealed: dict[str, Sealed] = {}
        gone: list[str] = []
        for start in range(0, len(rows), _CHUNK):
            if start:
                await asyncio.sleep(0)
            for row in rows[start : start + _CHUNK]:
                if row["active"] and row["deleted_at"] is None:
                    subscription, values = self._unopened(row)
                    live.append(subscription)
                    sealed[subscription.id] = values
                    if values.unreadable:
                        log.error("subscription.undecryptable", subscription_id=subscription.id)
                else:
                    gone.append(row["id"])
        # In stamp order: the last is the newest (a walk of every row here held the loop for a
        # fifth of a second at 100,000).
        high = int(rows[-1]["change_seq"]) if rows else after
        return ChangedSubscriptions(live, gone, high, sealed)

    async def active_subscriptions(self) -> list[Subscription]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM subscriptions "
                "WHERE active = $1 AND deleted_at IS NULL ORDER BY id",
                True,
            )
        active = [self._subscription(row) for row in rows]
        for subscription in active:
            if subscription.secret is None:
                # Still matched (its events are recorded, nothing is lost); delivery skips it.
                log.error("subscription.undecryptable", subscription_id=subscription.id)
        return active

    async def deactivated_subscriptions(self) -> int:
        # The state index's entries of the inactive ones (migration 0012), in the store's
        # thread. Not the active ones too: PostgreSQL's planner walks the whole table for a
        # condition nearly every row meets (docs/decisions/0018-store-wide-counts-at-scale.md).
        async with self._scan() as conn:
            row = await conn.fetchrow(
                "SELECT count(*) AS n FROM subscriptions WHERE deleted_at IS NULL AND active = $1",
                False,
            )
        assert row is not None
        return int(row["n"])


def _plain_row(row: Row) -> dict[str, Any]:
    """The plain settings of a row (`_PLAIN_COLUMNS`) as `operational.update_changes` compares
    them: lists for the JSON lists, booleans for the flags."""
    return {
        **dict(row),
        "events": orjson.loads(row["events"]),
        "data_fields": None if row["data_fields"] is None else orjson.loads(row["data_fields"]),
        "active": bool(row["active"]),
        "hmac_headers": bool(row["hmac_headers"]),
    }


def _like_escaped(text: str) -> str:
    """`text` matched literally by LIKE … ESCAPE '\\': its wildcards and the escape escaped."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _data_fields(fields: Sequence[str] | None) -> str | None:
    """`data_fields` as stored: a JSON list, NULL for every field."""
    return None if fields is None else orjson.dumps(list(fields)).decode()


async def _insert(
    conn: Conn, table: str, returning: str, *, stamped: bool = False, **values: Any
) -> Row:
    """Inserts one row and returns its `returning` columns; `stamped`, a subscription that
    moves the revision and is stamped with it by the same statement (`bump_revision` in one
    round trip, where the driver `writes_in_with`). The table and column names are this
    module's constants, never input."""
    columns = ", ".join(values)
    placeholders = ", ".join(f"${n}" for n in range(1, len(values) + 1))
    bumped = ""
    if stamped:
        bumped = BUMPED
        columns += ", change_seq"
        placeholders += f", {NEW_STAMP}"
    row = await conn.fetchrow(
        f"{bumped}INSERT INTO {table} ({columns}) VALUES ({placeholders}) RETURNING {returning}",
        *values.values(),
    )
    if row is None:  # an INSERT without ON CONFLICT returns its row or raises
        raise RuntimeError(f"INSERT INTO {table} returned no row")
    return row
