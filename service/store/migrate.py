"""Versioned schema migrations with Alembic, on the same URL as the store.

A store opened on a schema already at the newest revision (every start but the first after an
upgrade, every CLI command) reads the recorded revision with the store's own driver and compares
it with the newest migration file's: Alembic and SQLAlchemy, whose import is most of a
command's start, are imported only when there is something to migrate."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection

_SCRIPTS = Path(__file__).with_name("migrations")
# Any constant: replicas starting together take turns instead of migrating at once.
_ADVISORY_LOCK = 0x1D_3B_400C


def sqlalchemy_url(database_url: str) -> str:
    """The async SQLAlchemy form of `WEBHOOKS_DATABASE_URL`."""
    if database_url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + database_url.removeprefix("sqlite:///")
    _, _, rest = database_url.partition("://")
    return "postgresql+asyncpg://" + rest


def sqlite_path(database_url: str) -> Path:
    return Path(database_url.removeprefix("sqlite:///"))


def _config() -> Config:
    from alembic.config import Config  # noqa: PLC0415 - only when migrating

    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    return config


def head_revision() -> str:
    """The newest revision, as Alembic reads the scripts."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415 - only when asked

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def newest_revision() -> str:
    """The newest revision from the migration files' names alone (`NNNN_what.py`, each revising
    the one before it): `head_revision` without importing Alembic
    (tests/integration/test_migrations.py checks that the two agree)."""
    return max(path.name[:4] for path in (_SCRIPTS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


async def recorded_revision(database_url: str) -> str | None:
    """The schema's revision as the database records it (Alembic's `alembic_version`); None
    for a database with none yet."""
    if database_url.startswith("sqlite:///"):
        path = sqlite_path(database_url)
        if not path.exists():
            return None

        def read() -> str | None:
            with contextlib.closing(sqlite3.connect(path)) as db:
                try:
                    row = db.execute("SELECT version_num FROM alembic_version").fetchone()
                except sqlite3.OperationalError:  # no such table: never migrated
                    return None
            return None if row is None else str(row[0])

        return await asyncio.to_thread(read)
    conn = await asyncpg.connect(database_url)
    try:
        value = await conn.fetchval("SELECT version_num FROM alembic_version")
    except asyncpg.UndefinedTableError:
        return None
    finally:
        await conn.close()
    return None if value is None else str(value)


async def migrate(database_url: str, revision: str = "head") -> tuple[str | None, str]:
    """Upgrade the schema to `revision` (the newest by default); returns (revision before,
    revision after)."""
    newest = newest_revision()
    if revision == "head" and await recorded_revision(database_url) == newest:
        return newest, newest
    # Only now: the import is most of a command's start (the module docstring).
    from alembic import command  # noqa: PLC0415
    from alembic.runtime.migration import MigrationContext  # noqa: PLC0415
    from sqlalchemy import text  # noqa: PLC0415
    from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415

    if database_url.startswith("sqlite:///"):
        sqlite_path(database_url).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(sqlalchemy_url(database_url))
    config = _config()

    def upgrade(connection: Connection) -> tuple[str | None, str]:
        before = MigrationContext.configure(connection).get_current_revision()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        after = MigrationContext.configure(connection).get_current_revision()
        assert after is not None
        return before, after

    try:
        async with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                await connection.execute(text(f"SELECT pg_advisory_lock({_ADVISORY_LOCK})"))
            revisions = await connection.run_sync(upgrade)
            await connection.commit()
            return revisions
    finally:
        await engine.dispose()
