"""The test receiver: notes every request and answers as a test told it to. Not part of the
service; `tools.sink` serves it across processes (the bench), `tools.demo_receiver` is the demo's.

It serves aiohttp's low-level server (no router, no middleware, no access log: a bench receiver
must cost little CPU) and notes every POST as a `Received` (path, headers, body, arrival time,
status answered). How a path answers:

- by its `Behaviour` when one was set (`set()`, until set to None): a status (and a `body`),
  after a pause (`delay`), or only after the sender gave up (`hang`);
- else by a scripted behaviour named by the path, for the tests: `flaky` (500 twice per delivery,
  then 200), `echo` (500 once per delivery, then 200, each answering with the request's body, so
  the attempt log's excerpts hold the payload), `gone` (410), `slowdown` (429 with
  `Retry-After: 2` once per delivery, then 204), `redirect` (302), `huge` (a 5 MiB answer),
  `hang…` (no answer until the receiver stops);
- else with the default status (200 in-process; `tools.sink`'s `--status`, 204 by default).

Before the path, a request's customer (the body's `data.customerId`) may decide: a `Behaviour` set
for that customer (`set_customer()`), or a seeded random failure (`fail_at_random()`). While either
is in use the receiver also counts each (path, customer)'s requests in flight:
`max_in_flight_by_customer` shows whether one customer's deliveries ever overlapped (the ordered
delivery tests). `serve_command` is the `main` the two receiver commands share.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_ID_KEY = b'"id":"'
_CUSTOMER_KEY = b'"customerId":"'


@dataclass(frozen=True, slots=True)
class Received:
    """One request as it arrived."""

    path: str  # without the leading slash
    headers: Mapping[str, str]
    body: bytes
    at: float  # by the receiver's clock: epoch seconds unless a test gave it another
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
    body: bytes = b""  # what the answer says (the sender keeps its first KiB as an excerpt)


@dataclass
class Receiver:
    """Notes every request and answers as its path says (see the module's docstring)."""

    default_status: int = 200
    base: str = ""
    clock: Callable[[], float] = time.time  # what `Received.at` reads
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

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    def set(self, path: str, behaviour: Behaviour | None) -> None:
        """Answers every request on `path` so; None gives the path back to its script."""
        if behaviour is None:
            self._behaviours.pop(path, None)
        else:
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
        arrived = self.clock()
        body = await request.read()
        name = request.path[1:]
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
            response = self._scripted(name, headers, body)
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
        return web.Response(status=behaviour.status, body=behaviour.body)

    def _note(
        self, name: str, headers: Mapping[str, str], body: bytes, at: float, status: int
    ) -> None:
        self.requests.append(Received(name, headers, body, at, status))
        if 200 <= status < 300:
            self.ok[name] += 1

    def _scripted(self, name: str, headers: Mapping[str, str], body: bytes) -> web.Response | None:
        """The tests' named behaviours; None for a `hang…` path."""
        if name.startswith("hang"):
            return None
        key = (name, headers.get("X-Identity-Delivery", ""))
        if name in ("flaky", "slowdown", "echo"):
            self._seen[key] += 1
        if name == "flaky":
            return web.Response(status=500 if self._seen[key] <= 2 else 200)
        if name == "echo":
            return web.Response(status=500 if self._seen[key] == 1 else 200, body=body)
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


def serve_command(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    make: Callable[[argparse.Namespace], Receiver],
    announce: Callable[[Receiver, argparse.Namespace], None],
) -> int:
    """The `main` of a receiver's command: adds `--host` and `--port` to `parser`, serves the
    receiver `make` builds from the arguments, `announce`s it, and stops at SIGTERM or SIGINT;
    exits 1 with a message naming `--port` when it cannot listen."""
    parser.add_argument("--host", default="127.0.0.1", help="bind address (%(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve_until_stopped(make(args), args, announce))
    except OSError as exc:
        print(
            f"cannot listen on {args.host}:{args.port} ({exc.strerror}); pass another --port",
            file=sys.stderr,
        )
        return 1
    return 0


async def _serve_until_stopped(
    receiver: Receiver,
    args: argparse.Namespace,
    announce: Callable[[Receiver, argparse.Namespace], None],
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with receiver.serving(args.host, args.port):
        announce(receiver, args)
        await stop.wait()
