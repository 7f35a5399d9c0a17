"""`identity-webhooks migrate`: the database schema brought up to date."""

from __future__ import annotations

import argparse
import asyncio

from service.cli.run import with_settings
from service.settings import Settings
from service.store import migrate as migrate_store


@with_settings
def migrate(_: argparse.Namespace, settings: Settings) -> int:
    before, after = asyncio.run(migrate_store(settings.database_url))
    print(f"schema at revision {after} (was {before or 'none'})")
    return 0
