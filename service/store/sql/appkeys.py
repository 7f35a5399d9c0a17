"""API keys in SQL: a key is stored as its hash (`service.credentials`), shown once."""

from __future__ import annotations

from typing import Any

from service import credentials, ids, operational
from service.domain import SYSTEM, Actor, ApiKey, AuditEntry
from service.store.sql.base import Conn
from service.store.sql.operational import OperationalSql

_COLUMNS = "id, org_id, name, prefix, created_at, revoked_at"


class ApiKeysSql(OperationalSql):
    """`interfaces.ApiKeys`."""

    async def create_api_key(
        self, org_id: str, name: str | None, *, actor: Actor = SYSTEM
    ) -> tuple[ApiKey, str]:
        key = credentials.new_api_key()
        label = credentials.api_key_label(key)
        record = ApiKey(ids.new_id(ids.API_KEY), org_id, name, label, self._now(), None)
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO api_keys (id, org_id, name, key_hash, prefix, created_at) "
                "VALUES ($1, $2, $3, $4, $5, $6)",
                record.id,
                org_id,
                name,
                credentials.hash_api_key(key),
                label,
                record.created_at,
            )
            changes = {"name": name, "prefix": label}
            await self._audit_key(
                conn, record.org_id, record.id, "created", actor=actor, changes=changes
            )
        return record, key

    async def org_for_api_key(self, key: str) -> str | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "SELECT org_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
                credentials.hash_api_key(key),
            )
        return None if row is None else str(row["org_id"])

    async def api_key_for(self, key: str) -> ApiKey | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
                credentials.hash_api_key(key),
            )
        return None if row is None else ApiKey(**dict(row))

    async def list_api_keys(self) -> list[ApiKey]:
        async with self._connection() as conn:
            rows = await conn.fetch(f"SELECT {_COLUMNS} FROM api_keys ORDER BY id")
        return [ApiKey(**dict(row)) for row in rows]

    async def revoke_api_key(self, key_id: str, *, actor: Actor = SYSTEM) -> bool:
        async with self._transaction() as conn:
            row = await conn.fetchrow(
                "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL "
                "RETURNING org_id, name",
                key_id,
                self._now(),
            )
            if row is None:
                return False
            changes = {"name": row["name"]}
            await self._audit_key(
                conn, row["org_id"], key_id, "revoked", actor=actor, changes=changes
            )
        return True

    async def _audit_key(
        self,
        conn: Conn,
        org_id: str,
        key_id: str,
        action: str,
        *,
        actor: Actor,
        changes: dict[str, Any],
    ) -> None:
        """The audit entry of a change to an API key (its name and prefix, never the key)."""
        now = self._now()
        entry_id = ids.new_id(operational.AUDIT)
        await self._audit(
            conn,
            AuditEntry(entry_id, org_id, now, actor, f"api_key.{action}", None, key_id, changes),
        )
