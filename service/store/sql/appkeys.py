"""API keys in SQL: a key is stored as its hash (`service.credentials`), shown once."""

from __future__ import annotations

from service import credentials, ids
from service.domain import ApiKey
from service.store.sql.base import SqlBase, insert_row

_COLUMNS = "id, org_id, name, prefix, created_at, revoked_at"


class ApiKeysSql(SqlBase):
    """`interfaces.ApiKeys`."""

    async def create_api_key(self, org_id: str, name: str | None) -> tuple[ApiKey, str]:
        key = credentials.new_api_key()
        async with self._transaction() as conn:
            row = await insert_row(
                conn,
                "api_keys",
                _COLUMNS,
                id=ids.new_id(ids.API_KEY),
                org_id=org_id,
                name=name,
                key_hash=credentials.hash_api_key(key),
                prefix=credentials.api_key_label(key),
                created_at=self._now(),
            )
        return ApiKey(**dict(row)), key

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
