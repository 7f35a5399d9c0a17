"""The bench's sink: the test receiver (`tools.receiver`) in a process of its own, told what to
answer and read back over HTTP. Not part of the service.

    python -m tools.sink [--host H] [--port P] [--status S]

prints the bound port and serves until SIGTERM. Besides the webhooks it answers a control
protocol under `/_/`: `POST /_/set?path=P&status=500&delay=S&hang=S` (or `customer=C` instead of
`path`) sets a behaviour, `POST /_/clear?customer=C` ends a customer's, `GET /_/stats` gives the
2xx answers and the most requests in flight per path, `GET /_/dump` every request noted, as
columns. `SinkProcess` starts it and speaks that protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from tools.receiver import Behaviour, Receiver, serve_command

_ROOT = Path(__file__).resolve().parents[1]  # so that `-m tools.sink` resolves


@dataclass
class Sink(Receiver):
    """A `Receiver` that also answers the control protocol of the module's docstring."""

    default_status: int = 204

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path.startswith("/_/"):
            return self._control(request)
        return await super().handle(request)

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


@dataclass(frozen=True)
class Receipts:
    """Everything one receiver noted: parallel columns, one entry per request."""

    path: list[str]
    delivery: list[str]
    event: list[str]
    at: list[float]
    status: list[int]
    customer: list[str] = field(default_factory=list)


class SinkProcess:
    """The sink as a child process (`python -m tools.sink`), and its control protocol."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None
        self.port = 0
        self._session: aiohttp.ClientSession | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"

    async def start(self) -> SinkProcess:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tools.sink",
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.sink", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--status", type=int, default=204, help="default answer (%(default)s)")
    return serve_command(
        parser,
        argv,
        lambda args: Sink(default_status=args.status),
        lambda sink, _: print(sink.port, flush=True),
    )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
