"""The local demo behind `make run` (deploy/local/demo.sh): a webhook receiver that checks both
signature headers and prints one line per delivery, and the Kafka topics the demo needs.

    python -m service.demo receiver --secret-file F [--host H] [--port P] [--url-file U]
    python -m service.demo topics

The receiver answers every POST: 204 when each signature header present verifies (and at least
one is present), 401 when one does not, 503 while the secret file is still empty (the
subscription, and so its secret, is created after the receiver starts). It re-reads the file
whenever it changes, so a new subscription's secret is picked up without a restart. A line shows
ids, the event name and the verdicts; never the body, never the secret.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

import orjson
from aiohttp import web

from service.errors import SignatureError
from service.signing import LEGACY_HEADER, QUANTUM_HEADER, verify_signature

Emit = Callable[[str], None]

RECEIVER_PATH = "/webhooks/identity"
_FIELD_CHARS = 64


class SecretFile:
    """The signing secret, read from a file that may be empty or absent at first."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._secret: str | None = None

    def current(self) -> str | None:
        """The secret as the file holds it now; read again only when the file changed."""
        try:
            stat = self._path.stat()
        except OSError:
            return self._secret
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            try:
                text = self._path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError):
                return self._secret
            self._stamp = stamp
            self._secret = text or None
        return self._secret


def _print_line(line: str) -> None:
    print(line, flush=True)


def receiver_app(secret_file: Path, emit: Emit = _print_line) -> web.Application:
    """The receiver as an aiohttp application: POST anywhere, one `emit` call per request."""
    secrets = SecretFile(secret_file)

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        secret = secrets.current()
        if secret is None:
            emit(f"{_clock()}  no secret in {secret_file} yet  → 503")
            return web.Response(status=503, headers={"Retry-After": "1"})
        verdicts = {
            "legacy": _check(secret, request.headers.get(LEGACY_HEADER), body),
            "quantum": _check(secret, request.headers.get(QUANTUM_HEADER), body),
        }
        genuine = all(v in ("✓", "-") for v in verdicts.values()) and any(
            v == "✓" for v in verdicts.values()
        )
        status = 204 if genuine else 401
        emit(delivery_line(request.headers, body, verdicts, status))
        return web.Response(status=status)

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/{path:.*}", receive)
    return app


def _check(secret: str, header: str | None, body: bytes) -> str:
    if header is None:
        return "-"
    try:
        verify_signature(secret, header, body)
    except SignatureError as exc:
        return f"✗ ({exc.reason})"
    return "✓"


def delivery_line(
    headers: Mapping[str, str], body: bytes, verdicts: Mapping[str, str], status: int
) -> str:
    """`12:00:01.123  verification.created  whd_…  evt_…  org_demo  sig legacy ✓ quantum ✓
    sibling=orchestration  → 204`: ids and verdicts only."""
    envelope = _envelope(body)
    fields = [
        _clock(),
        f"{_clean(headers.get('X-Identity-Event')):<20}",
        _clean(headers.get("X-Identity-Delivery")),
        _clean(envelope.get("id")),
        _clean(envelope.get("orgId")),
        "sig " + " ".join(f"{name} {verdict}" for name, verdict in verdicts.items()),
    ]
    sibling = headers.get("X-Sibling-Service")
    if sibling is not None:
        fields.append(f"sibling={_clean(sibling)}")
    fields.append(f"→ {status}")
    return "  ".join(fields)


def _envelope(body: bytes) -> dict[str, object]:
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _clean(value: object) -> str:
    """A short printable token: ids come from the request, which nobody has vetted yet."""
    if not isinstance(value, str) or not value:
        return "?"
    text = "".join(c if c.isprintable() and not c.isspace() else "?" for c in value)
    return text if len(text) <= _FIELD_CHARS else text[: _FIELD_CHARS - 1] + "…"


def _clock() -> str:
    return datetime.now().astimezone().strftime("%H:%M:%S.%f")[:-3]


async def run_receiver(host: str, port: int, secret_file: Path, url_file: Path | None) -> None:
    """Serve the receiver until SIGINT or SIGTERM; write its base URL to `url_file` once
    listening (so a script can start it on port 0 and learn the port)."""
    runner = web.AppRunner(receiver_app(secret_file), access_log=None, handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://{host}:{bound}{RECEIVER_PATH}"
        _print_line(f"demo receiver listening on {url} (secret read from {secret_file})")
        if url_file is not None:
            # Written whole, then renamed: a reader never sees half a URL.
            partial = url_file.with_name(url_file.name + ".tmp")
            partial.write_text(url + "\n")
            os.replace(partial, url_file)
        await stop.wait()
    finally:
        await runner.cleanup()


async def ensure_topics(bootstrap: str, names: Sequence[str], partitions: int = 3) -> list[str]:
    """Creates those of `names` that do not exist yet (replication 1: a local broker);
    returns the ones it created. A consumer subscribed to a missing topic would only see it
    after its next metadata refresh, minutes later."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: PLC0415

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="identity-webhooks-demo")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in dict.fromkeys(names) if name not in existing]
        if missing:
            await admin.create_topics([NewTopic(name, partitions, 1) for name in missing])
        return missing
    finally:
        await admin.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.demo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    receiver = commands.add_parser("receiver", help="run the demo webhook receiver")
    receiver.add_argument(
        "--secret-file",
        required=True,
        type=Path,
        help="file holding the subscription's signing secret; may be empty at first",
    )
    receiver.add_argument("--host", default="127.0.0.1", help="bind address (%(default)s)")
    receiver.add_argument("--port", type=int, default=0, help="port; 0 picks a free one")
    receiver.add_argument("--url-file", type=Path, help="write the receiver's URL here")
    commands.add_parser(
        "topics", help="create WEBHOOKS_KAFKA_TOPICS and the DLQ topic when missing"
    )
    args = parser.parse_args(argv)
    if args.command == "receiver":
        asyncio.run(run_receiver(args.host, args.port, args.secret_file, args.url_file))
        return 0
    from service.settings import SettingsError, load_settings  # noqa: PLC0415

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    names = [*settings.kafka_topics, settings.kafka_dlq_topic]
    created = asyncio.run(ensure_topics(settings.kafka_bootstrap_servers, names))
    print(f"created topics: {', '.join(created)}" if created else "topics exist")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
