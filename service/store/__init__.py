"""The store: its interfaces by role (`interfaces`), one SQL implementation (`sql`) over a SQLite
and a PostgreSQL driver, and migrations."""

from __future__ import annotations

from service.operational import AlertPolicy
from service.settings import Settings
from service.store.crypto import Keyring, Undecryptable, key_file_for
from service.store.interfaces import (
    CENSUS_BUCKETS,
    ApiKeys,
    Audit,
    ChangedSubscriptions,
    Claim,
    DeliveryLog,
    ExpungeCursor,
    Expunged,
    Feeds,
    IndexBehind,
    Lease,
    Page,
    PageRequest,
    PersonalData,
    Pipeline,
    PurgeCursor,
    Purged,
    Recorded,
    RekeyProgress,
    Retention,
    Sealed,
    SealedCensus,
    Store,
    StoreUnavailable,
    SubscriptionChanges,
    Subscriptions,
    Summaries,
    walk,
)
from service.store.migrate import migrate, sqlite_path

__all__ = [
    "CENSUS_BUCKETS",
    "ApiKeys",
    "Audit",
    "ChangedSubscriptions",
    "Claim",
    "DeliveryLog",
    "ExpungeCursor",
    "Expunged",
    "Feeds",
    "IndexBehind",
    "Lease",
    "Page",
    "PageRequest",
    "PersonalData",
    "Pipeline",
    "PurgeCursor",
    "Purged",
    "Recorded",
    "RekeyProgress",
    "Retention",
    "Sealed",
    "SealedCensus",
    "Store",
    "StoreUnavailable",
    "SubscriptionChanges",
    "Subscriptions",
    "Summaries",
    "Undecryptable",
    "keyring",
    "migrate",
    "open_store",
    "sqlite_path",
    "walk",
]


def keyring(settings: Settings) -> Keyring:
    """The keys the store seals with; see `crypto` for where they come from."""
    if settings.encryption_key is not None:
        return Keyring(settings.encryption_key.get_secret_value())
    if settings.is_postgres:
        raise ValueError(
            "WEBHOOKS_ENCRYPTION_KEY is required with PostgreSQL: every replica needs the same key"
        )
    return Keyring(key_file_for(sqlite_path(settings.database_url)))


async def open_store(settings: Settings, *, run_migrations: bool = True) -> Store:
    """Connects to the configured database, bringing its schema up to date first, and reads
    the store's own keys (raises `crypto.Undecryptable` when no configured key opens them)."""
    keys = keyring(settings)
    if run_migrations:
        await migrate(settings.database_url)
    store: Store
    if settings.is_postgres:
        from service.store.postgres import open_postgres  # noqa: PLC0415 - driver only when used

        store = await open_postgres(
            settings.database_url, keys, pool_size=settings.database_pool_size
        )
    else:
        from service.store.sqlite import open_sqlite  # noqa: PLC0415

        store = await open_sqlite(sqlite_path(settings.database_url), keys)
    store.alerts = AlertPolicy(
        attempts=settings.failing_after_attempts, after_ms=int(settings.failing_after * 1000)
    )
    try:
        await store.load_keys()
    except BaseException:
        await store.close()
        raise
    return store
