"""Versioned schema migrations with Alembic, on the same URL as the store."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

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
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


async def migrate(database_url: str, revision: str = "head") -> tuple[str | None, str]:
    """Upgrade the schema to `revision` (the newest by default); returns (revision before,
    revision after)."""
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
