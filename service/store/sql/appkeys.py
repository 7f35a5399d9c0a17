"""API keys in SQL: a key is stored as its hash (`service.credentials`), shown once."""

from __future__ import annotations

from service import credentials, ids
from service.domain import ApiKey
from service.store.sql.base import SqlBase

_COLUMNS = "id, org_id, name, prefix, created_at, revoked_at"


class ApiKeysSql(SqlBase):
    """`interfaces.ApiKeys`."""

    async def create_api_key(self, org_id: str, name: str | None) -> tuple[ApiKey, str]:
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
        return record, key

    async def org_for_api_key(self, key: str) -> str | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "SELECT org_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
                credentials.hash_api_key(key),
            )
        return None if row is None else str(row["org_id"])

    async def list_api_keys(self) -> list[ApiKey]:
        async with self._connection() as conn:
            rows = await conn.fetch(f"SELECT {_COLUMNS} FROM api_keys ORDER BY id")
        return [ApiKey(**dict(row)) for row in rows]

    async def revoke_api_key(self, key_id: str) -> bool:
        async with self._transaction() as conn:
            changed = await conn.execute(
                "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                key_id,
                self._now(),
            )
        return changed > 0
