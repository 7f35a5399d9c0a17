"""The `identity-webhooks` command line: `parser` reads the arguments, and the module of the
command does its work (parse, call, print). A command's module is imported only when it runs, so
that light commands such as `verify` start without the store, the API or the Kafka client."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import import_module
from typing import TYPE_CHECKING

from service.cli.parser import build_parser

if TYPE_CHECKING:
    from service.cli.run import Command

COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("serve", "serve"),
    "migrate": ("migrate", "migrate"),
    "verify": ("verify", "verify"),
    "api-key": ("apikeys", "api_key"),
    "subscriptions": ("subscriptions", "subscriptions"),
    "deliveries": ("deliveries", "deliveries"),
    "redeliver": ("recovery", "redeliver"),
    "replay": ("recovery", "replay"),
    "rotate-secret": ("secrets", "rotate_secret"),
    "rekey": ("rekey", "rekey"),
    "erase": ("erasure", "erase"),
    "listen": ("remote", "listen"),
    "trigger": ("remote", "trigger"),
    "audit": ("audit", "audit"),
}
"""Each command's module in this package, and its function there."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and of `python -m service`."""
    args = build_parser().parse_args(argv)
    module, function = COMMANDS[args.command]
    command: Command = getattr(import_module(f"{__name__}.{module}"), function)
    return command(args)
