"""The store: its interfaces by role (`interfaces`), one SQL implementation (`sql`) over a SQLite
and a PostgreSQL driver, and migrations."""

from __future__ import annotations

from service.settings import Settings
from service.store.crypto import SecretBox, key_file_for
from service.store.interfaces import (
    ApiKeys,
    Claim,
    DeliveryLog,
    Lease,
    Page,
    PageRequest,
    Pipeline,
    Recorded,
    Retention,
    Store,
    StoreUnavailable,
    SubscriptionChanges,
    Subscriptions,
    Summaries,
)
from service.store.migrate import migrate, sqlite_path

__all__ = [
    "ApiKeys",
    "Claim",
    "DeliveryLog",
    "Lease",
    "Page",
    "PageRequest",
    "Pipeline",
    "Recorded",
    "Retention",
    "Store",
    "StoreUnavailable",
    "SubscriptionChanges",
    "Subscriptions",
    "Summaries",
    "migrate",
    "open_store",
    "sqlite_path",
]


def secret_box(settings: Settings) -> SecretBox:
    """The cipher for signing secrets; see `crypto` for where the key comes from."""
    if settings.encryption_key is not None:
        return SecretBox(settings.encryption_key.get_secret_value())
    if settings.is_postgres:
        raise ValueError(
            "WEBHOOKS_ENCRYPTION_KEY is required with PostgreSQL: every replica needs the same key"
        )
    return SecretBox(key_file_for(sqlite_path(settings.database_url)))


async def open_store(settings: Settings, *, run_migrations: bool = True) -> Store:
    """Connects to the configured database, bringing its schema up to date first."""
    box = secret_box(settings)
    if run_migrations:
        await migrate(settings.database_url)
    if settings.is_postgres:
        from service.store.postgres import open_postgres  # noqa: PLC0415 - driver only when used

        return await open_postgres(settings.database_url, box)
    from service.store.sqlite import open_sqlite  # noqa: PLC0415

    return await open_sqlite(sqlite_path(settings.database_url), box)
