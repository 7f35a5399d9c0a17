"""The `identity-webhooks` command line (SPEC section 6)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

import structlog
from aiohttp import web

from service.app import create_app
from service.logging import configure_logging
from service.settings import Settings, SettingsError, load_settings

log = structlog.get_logger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and of `python -m service`."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    command: str = args.command
    if command == "serve":
        return _serve(settings)
    parser.print_help()
    return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="identity-webhooks",
        description="Deliver Identity Platform events from Kafka as signed webhooks.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("serve", help="run the API, the consumer and the dispatcher")
    return parser


def _serve(settings: Settings) -> int:
    async def run() -> None:
        app = create_app(settings)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            site = web.TCPSite(runner, settings.http_host, settings.http_port)
            await site.start()
            log.info("http.listening", host=settings.http_host, port=settings.http_port)
            await stop.wait()
            log.info("service.stopping")
        finally:
            await runner.cleanup()

    asyncio.run(run())
    return 0
