"""Liveness and readiness: `/healthz` answers while the process runs, `/readyz` only when every
registered check passes (the store answers, the consumer is in its group, no partition waits for
the dead-letter topic)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

Check = Callable[[], Awaitable[bool]]


class Readiness:
    """Named readiness checks that resources register as they start."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}

    def register(self, name: str, check: Check) -> None:
        self._checks[name] = check

    def unregister(self, name: str) -> None:
        self._checks.pop(name, None)

    async def report(self, timeout: float = 2.0) -> dict[str, bool]:
        """Each check's verdict; a check that raises or takes longer than `timeout` fails."""

        async def run(check: Check) -> bool:
            try:
                return await asyncio.wait_for(check(), timeout)
            except Exception:  # noqa: BLE001 - any failure of a probe means "not ready"
                return False

        names = list(self._checks)
        verdicts = await asyncio.gather(*(run(self._checks[name]) for name in names))
        return dict(zip(names, verdicts, strict=True))


def health_routes(readiness: Readiness) -> list[web.RouteDef]:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        checks = await readiness.report()
        ready = all(checks.values())
        return web.json_response(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status=200 if ready else 503,
        )

    return [web.get("/healthz", healthz), web.get("/readyz", readyz)]
