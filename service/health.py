"""Liveness and readiness: `/healthz` answers while the process runs, `/readyz` only when every
registered check passes (the store answers, the consumer is in its group, no partition waits for
the dead-letter topic). Beside the checks, `/readyz` shows facts that never decide readiness
(the last census of sealed values)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

Check = Callable[[], Awaitable[bool]]
Fact = Callable[[], Any]
"""Something readiness shows as it is, as JSON: read from memory, never a query."""


class Readiness:
    """Named readiness checks that resources register as they start, and facts shown beside
    them."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}
        self._facts: dict[str, Fact] = {}

    def register(self, name: str, check: Check) -> None:
        self._checks[name] = check

    def unregister(self, name: str) -> None:
        self._checks.pop(name, None)

    def describe(self, name: str, fact: Fact) -> None:
        """Shows `fact()` as `name` in `/readyz`'s body, whatever it says: it never makes the
        replica unready."""
        self._facts[name] = fact

    def undescribe(self, name: str) -> None:
        self._facts.pop(name, None)

    def facts(self) -> dict[str, Any]:
        return {name: fact() for name, fact in self._facts.items()}

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
            {"status": "ready" if ready else "not ready", "checks": checks, **readiness.facts()},
            status=200 if ready else 503,
        )

    return [web.get("/healthz", healthz), web.get("/readyz", readyz)]
