"""The bench's webhook receiver: a process of its own that costs as little CPU as it can.

`python -m tests.bench.receiver` serves aiohttp's low-level server (no router, no middleware, no
access log) on a free loopback port and prints the port on stdout. Every POST is noted as
(path, X-Identity-Delivery, event id, arrival time, status answered) in plain lists; the event id
is cut out of the body with two `find`s instead of a JSON parse. Paths answer 204 unless told
otherwise through the control paths under `/_/`:

- `GET /_/stats`: counts of 2xx answers and of all requests, and the most requests ever in
  flight at once, per path (JSON)
- `POST /_/set?path=P&status=500`, `&delay=SECONDS` (answer after a pause) or `&hang=SECONDS`
  (answer only after the sender has given up; never counted as delivered): how `/P` answers
- `GET /_/dump`: every note so far, as columns (JSON)

`ReceiverProcess` starts it from the bench and speaks that control protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

_ID_KEY = b'"id":"'
_ROOT = Path(__file__).resolve().parents[2]  # so that `-m tests.bench.receiver` resolves


@dataclass
class _Behaviour:
    status: int = 204
    delay: float = 0.0
    hang: float = 0.0


@dataclass
class _Notes:
    paths: list[str] = field(default_factory=list)
    deliveries: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    at: list[float] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    ok: Counter[str] = field(default_factory=Counter)
    in_flight: Counter[str] = field(default_factory=Counter)
    max_in_flight: Counter[str] = field(default_factory=Counter)


def _event_id(body: bytes) -> str:
    start = body.find(_ID_KEY)
    if start < 0:
        return ""
    start += len(_ID_KEY)
    end = body.find(b'"', start)
    return body[start:end].decode("ascii", "replace")


def make_handler(notes: _Notes) -> Any:
    behaviours: dict[str, _Behaviour] = {}
    default = _Behaviour()

    async def control(request: web.BaseRequest) -> web.StreamResponse:
        what = request.path[3:]
        if what == "stats":
            return web.Response(
                body=orjson.dumps({"ok": notes.ok, "max_in_flight": notes.max_in_flight}),
                content_type="application/json",
            )
        if what == "set":
            query = request.query
            behaviours[query["path"]] = _Behaviour(
                status=int(query.get("status", "204")),
                delay=float(query.get("delay", "0")),
                hang=float(query.get("hang", "0")),
            )
            return web.Response(status=204)
        if what == "dump":
            columns = {
                "path": notes.paths,
                "delivery": notes.deliveries,
                "event": notes.events,
                "at": notes.at,
                "status": notes.status,
            }
            return web.Response(body=orjson.dumps(columns), content_type="application/json")
        return web.Response(status=404)

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        arrived = time.time()
        path = request.path
        if path.startswith("/_/"):
            return await control(request)
        body = await request.read()
        name = path[1:]
        behaviour = behaviours.get(name, default)
        notes.paths.append(name)
        notes.deliveries.append(request.headers.get("X-Identity-Delivery", ""))
        notes.events.append(_event_id(body))
        notes.at.append(arrived)
        if behaviour.hang:
            notes.status.append(0)
            await asyncio.sleep(behaviour.hang)
            return web.Response(status=204)
        notes.status.append(behaviour.status)
        if behaviour.status < 300:
            notes.ok[name] += 1
        if behaviour.delay:
            # Only a path that takes time can have more than one request in flight here.
            notes.in_flight[name] += 1
            notes.max_in_flight[name] = max(notes.max_in_flight[name], notes.in_flight[name])
            try:
                await asyncio.sleep(behaviour.delay)
            finally:
                notes.in_flight[name] -= 1
        return web.Response(status=behaviour.status)

    return handle


async def serve(port: int) -> None:
    notes = _Notes()
    server = web.Server(make_handler(notes), access_log=None)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(server, "127.0.0.1", port, backlog=1024)
    bound = listener.sockets[0].getsockname()[1]
    print(bound, flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    listener.close()
    await server.shutdown(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.port))


@dataclass(frozen=True)
class Receipts:
    """Everything one receiver noted: parallel columns, one entry per request."""

    path: list[str]
    delivery: list[str]
    event: list[str]
    at: list[float]
    status: list[int]


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
            "tests.bench.receiver",
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

    async def dump(self) -> Receipts:
        data = await self._get("dump")
        return Receipts(data["path"], data["delivery"], data["event"], data["at"], data["status"])

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


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
