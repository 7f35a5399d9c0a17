"""What the store keeps on disk: signing secrets only encrypted, API keys only hashed.

The raw bytes are searched: SQLite's database and WAL files, and PostgreSQL's own files of every
table, index and TOAST relation of the database (read after a checkpoint).
"""

from __future__ import annotations

from pathlib import Path

from service.settings import Settings
from service.store import Store
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support.postgres import raw_database_bytes


def _sqlite_bytes(database_url: str) -> bytes:
    path = Path(database_url.removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))


async def test_the_raw_database_holds_no_secret_and_no_key(
    store: Store, settings_for: Settings
) -> None:
    _, key = await store.create_api_key("org_rest", "at rest")
    created = await store.create_subscription(
        "org_rest", "https://hooks.example.com/at-rest", ["verification.created"], None
    )
    found = await store.get_subscription("org_rest", created.id)
    assert found is not None
    assert created.secret is not None
    assert found.secret == created.secret  # kept, and readable through the store
    assert await store.org_for_api_key(key) == "org_rest"

    url = settings_for.database_url
    raw = await raw_database_bytes(url) if settings_for.is_postgres else _sqlite_bytes(url)
    # These bytes really are this database's, and what is stored in the clear is found.
    assert created.id.encode() in raw
    assert b"hooks.example.com/at-rest" in raw
    for needle in (
        created.secret,
        created.secret.removeprefix("qe_whsec_"),
        key,
        key.removeprefix("qe_key_"),
        TEST_ENCRYPTION_KEY,
    ):
        assert needle.encode() not in raw
