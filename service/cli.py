"""The `identity-webhooks` command line (SPEC section 6)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from service.errors import SignatureError
from service.logging import configure_logging
from service.settings import Settings, SettingsError, load_settings
from service.signing import DEFAULT_TOLERANCE, verify_signature

log = structlog.get_logger(__name__)

Command = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and of `python -m service`."""
    args = _parser().parse_args(argv)
    command: Command = _COMMANDS[args.command]
    return command(args)


def _with_settings(run: Callable[[argparse.Namespace, Settings], int]) -> Command:
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="identity-webhooks",
        description="Deliver Identity Platform events from Kafka as signed webhooks.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("serve", help="run the API, the consumer and the dispatcher")
    verify = commands.add_parser(
        "verify",
        help="check a webhook signature, as a receiver would",
        description="Exit 0 and print `ok` when the signature is valid; exit 1 with the reason on "
        "stderr when it is not; exit 2 on a usage error (e.g. the body file cannot be read).",
    )
    verify.add_argument("--secret", required=True, help="the signing secret, qe_whsec_…")
    verify.add_argument(
        "--header",
        required=True,
        help="the X-Quantum-Signature (t=…,v1=…) or X-Identity-Signature (sha256=…) value",
    )
    verify.add_argument(
        "--body-file",
        required=True,
        type=Path,
        help="the raw request body exactly as received (- reads standard input)",
    )
    verify.add_argument(
        "--tolerance",
        type=_seconds,
        default=DEFAULT_TOLERANCE,
        help="seconds t= may differ from now (default %(default)g)",
    )
    return parser


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds, zero or more")
    return seconds


def _verify(args: argparse.Namespace) -> int:
    path: Path = args.body_file
    try:
        body = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except OSError as exc:
        print(f"cannot read the body: {exc}", file=sys.stderr)
        return 2
    try:
        verify_signature(args.secret, args.header, body, tolerance=args.tolerance)
    except SignatureError as exc:
        print(exc, file=sys.stderr)
        return 1
    print("ok")
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here so that light commands such as `verify` start without the whole service.
    from aiohttp import web  # noqa: PLC0415

    from service.app import create_app  # noqa: PLC0415

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


_COMMANDS: dict[str, Command] = {
    "serve": _with_settings(_serve),
    "verify": _verify,
}
