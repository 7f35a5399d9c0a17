"""The demo's receiver: checks both signature headers of every delivery with the subscription's
secret, read from a file, and prints one line per delivery. Not part of the service.

It answers 204 when each header present verifies and one is present, 401 otherwise, 503 while the
file is still empty; the line holds ids, the event name and the verdicts, never the body or the
secret. The file is read again whenever it changes (a new subscription's secret needs no restart).

    python -m tools.demo_receiver --secret-file F [--url-file U] [--host H] [--port P]

prints a "listening" line (and writes the URL to U) and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson
from aiohttp import web

from service.errors import SignatureError
from service.signing import LEGACY_HEADER, QUANTUM_HEADER, verify_signature
from tools.receiver import Receiver, serve_command

Emit = Callable[[str], None]

DEMO_PATH = "/webhooks/identity"
_FIELD_CHARS = 64


@dataclass
class VerifyingReceiver(Receiver):
    """A `Receiver` that answers every request by its signatures (see the module's docstring)."""

    secret_file: Path = field(kw_only=True)
    emit: Emit = field(default=print, kw_only=True)
    _secret: _SecretFile = field(init=False)

    def __post_init__(self) -> None:
        self._secret = _SecretFile(self.secret_file)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        arrived = self.clock()
        return self._check(request.headers, await request.read(), arrived)

    def _check(self, headers: Mapping[str, str], body: bytes, at: float) -> web.Response:
        secret = self._secret.current()
        if secret is None:
            self.emit(f"{_clock()}  no secret in {self.secret_file} yet  → 503")
            self._note(DEMO_PATH[1:], headers, body, at, 503)
            return web.Response(status=503, headers={"Retry-After": "1"})
        verdicts = {
            "legacy": _verdict(secret, headers.get(LEGACY_HEADER), body),
            "quantum": _verdict(secret, headers.get(QUANTUM_HEADER), body),
        }
        genuine = all(v in ("✓", "-") for v in verdicts.values()) and any(
            v == "✓" for v in verdicts.values()
        )
        status = 204 if genuine else 401
        self._note(DEMO_PATH[1:], headers, body, at, status)
        self.emit(delivery_line(headers, body, verdicts, status))
        return web.Response(status=status)


class _SecretFile:
    """The signing secret, read from a file that may be empty or absent at first, and read
    again whenever it changes (a new subscription's secret needs no restart)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._secret: str | None = None

    def current(self) -> str | None:
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


def _verdict(secret: str, header: str | None, body: bytes) -> str:
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


def _announce(receiver: Receiver, args: argparse.Namespace) -> None:
    url = receiver.base + DEMO_PATH
    print(f"demo receiver listening on {url} (secret read from {args.secret_file})")
    if args.url_file is not None:
        # Written whole, then renamed: a reader never sees half a URL.
        partial = args.url_file.with_name(args.url_file.name + ".tmp")
        partial.write_text(url + "\n")
        os.replace(partial, args.url_file)
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.demo_receiver", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--secret-file",
        type=Path,
        required=True,
        help="check signatures with the secret in this file (may be empty at first)",
    )
    parser.add_argument("--url-file", type=Path, help="write the URL here once listening")
    return serve_command(
        parser,
        argv,
        lambda args: VerifyingReceiver(
            secret_file=args.secret_file, emit=lambda line: print(line, flush=True)
        ),
        _announce,
    )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
