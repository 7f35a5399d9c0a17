"""`identity-webhooks rekey`: the store's `rekey` (everything sealed again with the first key of
WEBHOOKS_ENCRYPTION_KEY, and what an older revision kept in clear sealed for the first time),
and with `--status` its `sealed_census` (docs/personal-data.md)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from service.cli.output import print_json, print_table
from service.cli.run import with_store
from service.settings import Settings
from service.store import RekeyProgress, SealedCensus, Store, keyring

TABLES = ("store_keys", "subscriptions", "events", "attempts")
"""In the order `rekey` goes through them."""
STATES = {
    "current": "sealed with the first configured key",
    "older": "sealed with another configured key (or a Fernet token): rekey seals them again",
    "unknown": "sealed with a key that is not configured: unreadable until it is again",
    "clear": "kept in clear by an older revision: rekey seals them",
}
_CONFIGURE = (
    "configure the key that sealed them again in WEBHOOKS_ENCRYPTION_KEY (after the first) and "
    "run `identity-webhooks rekey`"
)


@with_store
async def rekey(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    if args.status:
        return _status(args, settings, await store.sealed_census())
    done = await store.rekey(args.batch, _say_progress)
    census = await store.sealed_census()
    if args.json:
        print_json({**_as_json(done), "census": _census_json(census)})
    else:
        print_table(
            [("TABLE", "RESEALED", "UNDECRYPTABLE")]
            + [
                (table, str(done.resealed.get(table, 0)), str(done.undecryptable.get(table, 0)))
                for table in TABLES
            ]
        )
        print(_census_line(census))
    failed = {table: n for table, n in done.undecryptable.items() if n}
    if failed:
        which = ", ".join(f"{table} {n}" for table, n in failed.items())
        print(
            f"identity-webhooks rekey: {sum(failed.values())} rows are sealed with a key that "
            f"is not configured and were left as they are ({which}): {_CONFIGURE}",
            file=sys.stderr,
        )
        return 1
    return 0


def _status(args: argparse.Namespace, settings: Settings, census: SealedCensus) -> int:
    keys = [kid.hex() for kid in keyring(settings).key_ids]
    if args.json:
        print_json({**_census_json(census), "keys": keys})
    else:
        print(f"keys: {keys[0]} (seals)" + "".join(f", {kid}" for kid in keys[1:]))
        print_table(
            [("STATE", "ROWS", "MEANING")]
            + [(state, str(getattr(census, state)), meaning) for state, meaning in STATES.items()]
        )
    if census.unknown:
        print(
            f"identity-webhooks rekey: {census.unknown} values are sealed with a key that is not "
            f"configured: {_CONFIGURE}",
            file=sys.stderr,
        )
        return 1
    return 0


def _say_progress(done: RekeyProgress) -> None:
    """One line per batch on standard error, the totals so far."""
    resealed = ", ".join(f"{table} {done.resealed.get(table, 0)}" for table in TABLES)
    failed = sum(done.undecryptable.values())
    print(f"rekey: resealed {resealed}; undecryptable {failed}", file=sys.stderr, flush=True)


def _as_json(done: RekeyProgress) -> dict[str, Any]:
    return {
        "resealed": {table: done.resealed.get(table, 0) for table in TABLES},
        "undecryptable": {table: done.undecryptable.get(table, 0) for table in TABLES},
    }


def _census_json(census: SealedCensus) -> dict[str, int]:
    return {state: getattr(census, state) for state in STATES}


def _census_line(census: SealedCensus) -> str:
    counts = ", ".join(f"{state} {getattr(census, state)}" for state in STATES)
    return f"sealed values now: {counts}"
