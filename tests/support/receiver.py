"""A webhook receiver for tests: records every request and answers as each path says."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field

from aiohttp import web


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    base: str
    requests: list[Received] = field(default_factory=list)
    _seen: Counter[tuple[str, str]] = field(default_factory=Counter)

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def wait_for(
        self, condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition"
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}; got {len(self.requests)}")
            await asyncio.sleep(0.05)


def behaviours(receiver: Receiver) -> dict[str, Callable[[Received], web.StreamResponse]]:
    def ok(_: Received) -> web.StreamResponse:
        return web.Response(status=200, text="thanks")

    def flaky(request: Received) -> web.StreamResponse:
        # 500 twice per delivery, then 200.
        key = ("flaky", request.headers.get("X-Identity-Delivery", ""))
        receiver._seen[key] += 1
        return web.Response(status=500 if receiver._seen[key] <= 2 else 200)

    def gone(_: Received) -> web.StreamResponse:
        return web.Response(status=410)

    def slowdown(request: Received) -> web.StreamResponse:
        key = ("slowdown", request.headers.get("X-Identity-Delivery", ""))
        receiver._seen[key] += 1
        if receiver._seen[key] == 1:
            return web.Response(status=429, headers={"Retry-After": "2"})
        return web.Response(status=204)

    def redirect(_: Received) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": "https://elsewhere.example/"})

    def huge(_: Received) -> web.StreamResponse:
        return web.Response(status=200, body=b"x" * (5 * 1024 * 1024))

    return {
        "ok": ok,
        "flaky": flaky,
        "gone": gone,
        "slowdown": slowdown,
        "redirect": redirect,
        "huge": huge,
    }


async def start_receiver() -> AsyncGenerator[Receiver, None]:
    receiver = Receiver(base="")
    table = behaviours(receiver)
    hanging: set[asyncio.Future[None]] = set()

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        name = request.match_info["name"]
        received = Received(name, dict(request.headers), body, asyncio.get_running_loop().time())
        receiver.requests.append(received)
        if name.startswith("hang"):
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            hanging.add(future)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(future, 120)
            return web.Response(status=200)
        return table.get(name, table["ok"])(received)

    app = web.Application()
    app.router.add_post("/{name}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    receiver.base = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        for future in hanging:
            if not future.done():
                future.set_result(None)
        await runner.cleanup()
