"""How a command runs: with the `WEBHOOKS_*` settings and logging, or also over the store, where
what it refuses is one line on standard error, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable

from service.cli.errors import REFUSALS, refusal
from service.domain import Actor, ActorKind, Subscription
from service.errors import SubscriptionNotFound
from service.logging import configure_logging
from service.settings import Settings, SettingsError, load_settings
from service.store import Store, StoreUnavailable, Undecryptable, open_store

Command = Callable[[argparse.Namespace], int]
SettingsCommand = Callable[[argparse.Namespace, Settings], int]
StoreCommand = Callable[[argparse.Namespace, Settings, Store], Awaitable[int]]


def with_settings(run: SettingsCommand) -> Command:
    """A command that needs the `WEBHOOKS_*` settings and logging; the others start without them."""

    def command(args: argparse.Namespace) -> int:
        try:
            settings = load_settings()
        except SettingsError as exc:
            print(exc, file=sys.stderr)
            return 2
        configure_logging(settings.log_format, settings.log_level)
        return run(args, settings)

    return command


def with_store(run: StoreCommand) -> Command:
    """A command over the store of the `WEBHOOKS_*` settings."""

    def command(args: argparse.Namespace, settings: Settings) -> int:
        async def go() -> int:
            store = await open_store(settings)
            try:
                return await run(args, settings, store)
            finally:
                await store.close()

        words = ("identity-webhooks", args.command, getattr(args, "action", None))
        name = " ".join(word for word in words if word)
        try:
            return asyncio.run(go())
        except REFUSALS as exc:
            refused = refusal(exc)
            print(f"{name}: {refused}", file=sys.stderr)
            return refused.code
        except (StoreUnavailable, OSError) as exc:
            print(f"{name}: the database is away: {exc}", file=sys.stderr)
            return 1
        except Undecryptable as exc:
            # The store's own keys (`open_store`): no command can work without them.
            print(f"{name}: {exc}", file=sys.stderr)
            return 1

    return with_settings(command)


async def subscription_of(store: Store, args: argparse.Namespace) -> Subscription:
    """The subscription of SUBSCRIPTION_ID, in --org when given, else in whichever org."""
    subscription_id: str = args.subscription_id
    if args.org is None:
        found = await store.find_subscription(subscription_id)
    else:
        found = await store.get_subscription(args.org, subscription_id)
    if found is None:
        raise SubscriptionNotFound(subscription_id, args.org)
    return found


def cli_actor() -> Actor:
    """Who the audit trail names for a change made from the command line: `cli`, with the
    operating-system user running it (None when the system cannot say)."""
    try:
        user: str | None = getpass.getuser()
    except (OSError, KeyError):
        user = None
    return Actor(ActorKind.CLI, None, user)
