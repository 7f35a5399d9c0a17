"""The one webhook receiver of the demo, the tests and the benchmarks. Not part of the service.

It serves aiohttp's low-level server (no router, no middleware, no access log: a bench receiver
must cost little CPU) and notes every POST as a `Received` (path, headers, body, arrival time,
status answered). How a path answers:

- by its `Behaviour` when one was set (`set()`, or `POST /_/set?path=P&status=500&delay=S&hang=S`
  across processes): a status, after a pause (`delay`), or only after the sender gave up (`hang`);
- else by a scripted behaviour named by the path, for the tests: `flaky` (500 twice per delivery,
  then 200), `gone` (410), `slowdown` (429 with `Retry-After: 2` once per delivery, then 204),
  `redirect` (302), `huge` (a 5 MiB answer), `hang…` (no answer until the receiver stops);
- else with the default status (200 in-process; the command's `--status`, 204 by default).

Before the path, a request's customer (the body's `data.customerId`) may decide: a `Behaviour` set
for that customer (`set_customer()`, or `POST /_/set?customer=C&status=503`; `/_/clear?customer=C`
ends it), or a seeded random failure (`fail_at_random()`). While either is in use the receiver
also counts each (path, customer)'s requests in flight: `max_in_flight_by_customer` shows whether
one customer's deliveries ever overlapped (the ordered delivery tests).

With a secret file (the demo) it checks both signature headers with the file's current secret
instead: 204 when each header present verifies and one is present, 401 otherwise, 503 while the
file is still empty; and it prints one line per delivery: ids, event name and verdicts, never the
body or the secret.

    python -m deploy.local.receiver [--host H] [--port P] [--status S]
                                   [--secret-file F] [--url-file U]

prints the bound port (or, with a secret file, a "listening" line) and serves until SIGTERM.
Across processes, `GET /_/stats` and `GET /_/dump` give what it noted; `ReceiverProcess` starts
it and speaks that protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from service.errors import SignatureError
from service.signing import LEGACY_HEADER, QUANTUM_HEADER, verify_signature

Emit = Callable[[str], None]

DEMO_PATH = "/webhooks/identity"
_ID_KEY = b'"id":"'
_CUSTOMER_KEY = b'"customerId":"'
_FIELD_CHARS = 64
_ROOT = Path(__file__).resolve().parents[2]  # so that `-m deploy.local.receiver` resolves


@dataclass(frozen=True, slots=True)
class Received:
    """One request as it arrived."""

    path: str  # without the leading slash
    headers: Mapping[str, str]
    body: bytes
    at: float  # epoch seconds
    status: int  # what was answered; 0 for a request left hanging

    @property
    def delivery(self) -> str:
        return self.headers.get("X-Identity-Delivery", "")

    @property
    def event_id(self) -> str:
        """The envelope's id, cut out with two `find`s rather than a JSON parse."""
        return _cut(self.body, _ID_KEY)

    @property
    def customer(self) -> str:
        """The envelope's `data.customerId` (the first `customerId` in the body)."""
        return _cut(self.body, _CUSTOMER_KEY)


def _cut(body: bytes, key: bytes) -> str:
    """The string value after `key` (`"name":"`), or "" when there is none."""
    start = body.find(key)
    if start < 0:
        return ""
    start += len(key)
    return body[start : body.find(b'"', start)].decode("ascii", "replace")


@dataclass(frozen=True, slots=True)
class Behaviour:
    status: int = 204
    delay: float = 0.0
    hang: float = 0.0


@dataclass
class Receiver:
    """Notes every request and answers as its path says (see the module's docstring)."""

    default_status: int = 200
    secret_file: Path | None = None
    emit: Emit = print
    base: str = ""
    requests: list[Received] = field(default_factory=list)
    ok: Counter[str] = field(default_factory=Counter)
    max_in_flight: Counter[str] = field(default_factory=Counter)
    max_in_flight_by_customer: Counter[tuple[str, str]] = field(default_factory=Counter)
    _behaviours: dict[str, Behaviour] = field(default_factory=dict)
    _by_customer: dict[str, Behaviour] = field(default_factory=dict)
    _per_customer: bool = False  # a customer may decide, and overlaps are counted
    _failure_rate: float = 0.0
    _failure_status: int = 500
    _rng: random.Random = field(default_factory=random.Random)
    _customer_in_flight: Counter[tuple[str, str]] = field(default_factory=Counter)
    _seen: Counter[tuple[str, str]] = field(default_factory=Counter)
    _in_flight: Counter[str] = field(default_factory=Counter)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _secret: _SecretFile | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.secret_file is not None:
            self._secret = _SecretFile(self.secret_file)

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    def set(self, path: str, behaviour: Behaviour) -> None:
        self._behaviours[path] = behaviour

    def set_customer(self, customer: str, behaviour: Behaviour | None) -> None:
        """Answers every request about `customer` (on any path) so, until set to None."""
        self._per_customer = True
        if behaviour is None:
            self._by_customer.pop(customer, None)
        else:
            self._by_customer[customer] = behaviour

    def fail_at_random(self, rate: float, seed: int, status: int = 500) -> None:
        """Answers `status` to a share `rate` of the requests of customers without a behaviour
        of their own, drawn from a generator seeded with `seed`."""
        self._per_customer = True
        self._failure_rate = rate
        self._failure_status = status
        self._rng = random.Random(seed)  # noqa: S311 - test failures, not cryptography

    def overlapping_customers(self) -> dict[tuple[str, str], int]:
        """(path, customer) pairs that ever had two requests in flight at once."""
        return {k: n for k, n in self.max_in_flight_by_customer.items() if n > 1}

    async def wait_for(
        self, condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition"
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}; got {len(self.requests)}")
            await asyncio.sleep(0.05)

    # -- answering ---------------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        arrived = time.time()
        if request.path.startswith("/_/"):
            return self._control(request)
        body = await request.read()
        name = request.path[1:]
        if self._secret is not None:
            return self._check(request.headers, body, arrived)
        if self._per_customer:
            return await self._as_customer_says(name, request.headers, body, arrived)
        return await self._answer(name, request.headers, body, arrived)

    async def _as_customer_says(
        self, name: str, headers: Mapping[str, str], body: bytes, arrived: float
    ) -> web.StreamResponse:
        """The customer's behaviour, or a random failure, or else the path's answer; the
        (path, customer)'s requests in flight counted all along."""
        key = (name, _cut(body, _CUSTOMER_KEY))
        self._customer_in_flight[key] += 1
        self.max_in_flight_by_customer[key] = max(
            self.max_in_flight_by_customer[key], self._customer_in_flight[key]
        )
        try:
            forced = self._by_customer.get(key[1])
            if forced is None and self._failure_rate and self._rng.random() < self._failure_rate:
                forced = Behaviour(status=self._failure_status)
            if forced is None:
                return await self._answer(name, headers, body, arrived)
            self._note(name, headers, body, arrived, forced.status)
            if forced.delay:
                await asyncio.sleep(forced.delay)
            return web.Response(status=forced.status)
        finally:
            self._customer_in_flight[key] -= 1

    async def _answer(
        self, name: str, headers: Mapping[str, str], body: bytes, arrived: float
    ) -> web.StreamResponse:
        """As the path's behaviour says, or its script, or the default status."""
        behaviour = self._behaviours.get(name)
        if behaviour is None:
            response = self._scripted(name, headers)
            if response is None:
                return await self._hang_until_stopped(name, headers, body, arrived)
            self._note(name, headers, body, arrived, response.status)
            return response
        if behaviour.hang:
            self._note(name, headers, body, arrived, 0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), behaviour.hang)
            return web.Response(status=204)
        self._note(name, headers, body, arrived, behaviour.status)
        if behaviour.delay:
            # Only a path that takes time can have more than one request in flight here.
            self._in_flight[name] += 1
            self.max_in_flight[name] = max(self.max_in_flight[name], self._in_flight[name])
            try:
                await asyncio.sleep(behaviour.delay)
            finally:
                self._in_flight[name] -= 1
        return web.Response(status=behaviour.status)

    def _note(
        self, name: str, headers: Mapping[str, str], body: bytes, at: float, status: int
    ) -> None:
        self.requests.append(Received(name, headers, body, at, status))
        if 200 <= status < 300:
            self.ok[name] += 1

    def _scripted(self, name: str, headers: Mapping[str, str]) -> web.Response | None:
        """The tests' named behaviours; None for a `hang…` path."""
        if name.startswith("hang"):
            return None
        key = (name, headers.get("X-Identity-Delivery", ""))
        if name in ("flaky", "slowdown"):
            self._seen[key] += 1
        if name == "flaky":
            return web.Response(status=500 if self._seen[key] <= 2 else 200)
        if name == "gone":
            return web.Response(status=410)
        if name == "slowdown":
            if self._seen[key] == 1:
                return web.Response(status=429, headers={"Retry-After": "2"})
            return web.Response(status=204)
        if name == "redirect":
            return web.Response(status=302, headers={"Location": "https://elsewhere.example/"})
        if name == "huge":
            return web.Response(status=200, body=b"x" * (5 * 1024 * 1024))
        return web.Response(status=self.default_status)

    async def _hang_until_stopped(
        self, name: str, headers: Mapping[str, str], body: bytes, at: float
    ) -> web.Response:
        self._note(name, headers, body, at, 0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), 120)
        return web.Response(status=200)

    def _check(self, headers: Mapping[str, str], body: bytes, at: float) -> web.Response:
        assert self._secret is not None
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

    def _control(self, request: web.BaseRequest) -> web.Response:
        what = request.path[3:]
        if what == "stats":
            stats = {"ok": self.ok, "max_in_flight": self.max_in_flight}
            return web.Response(body=orjson.dumps(stats), content_type="application/json")
        if what == "set":
            query = request.query
            behaviour = Behaviour(
                status=int(query.get("status", "204")),
                delay=float(query.get("delay", "0")),
                hang=float(query.get("hang", "0")),
            )
            if "customer" in query:
                self.set_customer(query["customer"], behaviour)
            else:
                self.set(query["path"], behaviour)
            return web.Response(status=204)
        if what == "clear":
            self.set_customer(request.query["customer"], None)
            return web.Response(status=204)
        if what == "dump":
            columns = {
                "path": [r.path for r in self.requests],
                "delivery": [r.delivery for r in self.requests],
                "event": [r.event_id for r in self.requests],
                "customer": [r.customer for r in self.requests],
                "at": [r.at for r in self.requests],
                "status": [r.status for r in self.requests],
            }
            return web.Response(body=orjson.dumps(columns), content_type="application/json")
        return web.Response(status=404)

    # -- serving -----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def serving(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[Receiver]:
        """Listens until the block ends; `base` is the URL it listens on."""
        server = web.Server(self.handle, access_log=None)
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(server, host, port, backlog=1024)
        self.base = f"http://{host}:{listener.sockets[0].getsockname()[1]}"
        try:
            yield self
        finally:
            self._stopping.set()
            listener.close()
            await server.shutdown(0.5)


async def start_receiver(**options: Any) -> AsyncGenerator[Receiver, None]:
    """An in-process receiver on a free loopback port, for a pytest fixture."""
    async with Receiver(**options).serving() as receiver:
        yield receiver


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


# -- across processes (the bench, the demo) ------------------------------------------------------


@dataclass(frozen=True)
class Receipts:
    """Everything one receiver noted: parallel columns, one entry per request."""

    path: list[str]
    delivery: list[str]
    event: list[str]
    at: list[float]
    status: list[int]
    customer: list[str] = field(default_factory=list)


class ReceiverProcess:
    """The receiver as a child process, and its control protocol."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None
        self.port = 0
        self._session: aiohttp.ClientSession | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"

    async def start(self) -> ReceiverProcess:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "deploy.local.receiver",
            stdout=asyncio.subprocess.PIPE,
            cwd=_ROOT,
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 30)
        self.port = int(line)
        self._session = aiohttp.ClientSession()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def _get(self, what: str) -> Any:
        assert self._session is not None
        async with self._session.get(f"{self.base}/_/{what}") as response:
            return orjson.loads(await response.read())

    async def ok_total(self, paths: set[str] | None = None) -> int:
        """2xx answers so far, on `paths` (all when None)."""
        ok: dict[str, int] = (await self._get("stats"))["ok"]
        return sum(n for p, n in ok.items() if paths is None or p in paths)

    async def max_in_flight(self, path: str) -> int:
        data = await self._get("stats")
        return int(data["max_in_flight"].get(path, 0))

    async def set(
        self, path: str, *, status: int = 204, delay: float = 0.0, hang: float = 0.0
    ) -> None:
        assert self._session is not None
        params = {"path": path, "status": str(status), "delay": str(delay), "hang": str(hang)}
        async with self._session.post(f"{self.base}/_/set", params=params) as response:
            response.raise_for_status()

    async def set_customer(self, customer: str, *, status: int = 500, delay: float = 0.0) -> None:
        """Every request about `customer` is answered `status` (after `delay`), on any path."""
        assert self._session is not None
        params = {"customer": customer, "status": str(status), "delay": str(delay)}
        async with self._session.post(f"{self.base}/_/set", params=params) as response:
            response.raise_for_status()

    async def clear_customer(self, customer: str) -> None:
        assert self._session is not None
        params = {"customer": customer}
        async with self._session.post(f"{self.base}/_/clear", params=params) as response:
            response.raise_for_status()

    async def dump(self) -> Receipts:
        data = await self._get("dump")
        return Receipts(
            data["path"],
            data["delivery"],
            data["event"],
            data["at"],
            data["status"],
            data["customer"],
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def _run(args: argparse.Namespace) -> None:
    receiver = Receiver(
        default_status=args.status,
        secret_file=args.secret_file,
        emit=lambda line: print(line, flush=True),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with receiver.serving(args.host, args.port):
        if args.secret_file is None:
            print(receiver.base.rsplit(":", 1)[1], flush=True)
        else:
            url = receiver.base + DEMO_PATH
            print(f"demo receiver listening on {url} (secret read from {args.secret_file})")
            if args.url_file is not None:
                # Written whole, then renamed: a reader never sees half a URL.
                partial = args.url_file.with_name(args.url_file.name + ".tmp")
                partial.write_text(url + "\n")
                os.replace(partial, args.url_file)
            sys.stdout.flush()
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.local.receiver", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (%(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one")
    parser.add_argument("--status", type=int, default=204, help="default answer (%(default)s)")
    parser.add_argument(
        "--secret-file",
        type=Path,
        help="check signatures with the secret in this file (may be empty at first)",
    )
    parser.add_argument("--url-file", type=Path, help="with --secret-file: write the URL here")
    asyncio.run(_run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
