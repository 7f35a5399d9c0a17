"""`identity-webhooks api-key create|list|revoke`: the management API's keys."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from service.cli.output import print_table
from service.cli.run import cli_actor, with_store
from service.clock import iso
from service.domain import ApiKey
from service.settings import Settings
from service.store import Store


@with_store
async def api_key(args: argparse.Namespace, _: Settings, store: Store) -> int:
    return await _ACTIONS[args.action](args, store)


async def _create(args: argparse.Namespace, store: Store) -> int:
    record, key = await store.create_api_key(args.org, args.name, actor=cli_actor())
    named = f" ({record.name})" if record.name else ""
    print(
        f"created API key {record.id}{named} for {record.org_id}, "
        f"prefix {record.prefix}; it is shown once, below",
        file=sys.stderr,
    )
    print(key)
    return 0


async def _list(_: argparse.Namespace, store: Store) -> int:
    _print_keys(await store.list_api_keys())
    return 0


async def _revoke(args: argparse.Namespace, store: Store) -> int:
    if await store.revoke_api_key(args.key_id, actor=cli_actor()):
        print(f"revoked {args.key_id}")
        return 0
    print(f"no active API key has the id {args.key_id!r}", file=sys.stderr)
    return 1


_ACTIONS = {"create": _create, "list": _list, "revoke": _revoke}


def _print_keys(keys: Sequence[ApiKey]) -> None:
    rows = [("ID", "ORG", "NAME", "PREFIX", "CREATED", "REVOKED")]
    rows += [
        (
            key.id,
            key.org_id,
            key.name or "-",
            key.prefix + "…",
            iso(key.created_at),
            "-" if key.revoked_at is None else iso(key.revoked_at),
        )
        for key in keys
    ]
    print_table(rows)
