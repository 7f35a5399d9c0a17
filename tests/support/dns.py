"""Resolvers with fixed answers, for the SSRF guard's tests: nothing leaves the machine."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

from aiohttp.abc import AbstractResolver, ResolveResult


def fake_dns(answers: dict[str, list[str]]) -> Callable[[str], Awaitable[list[str]]]:
    """A `Resolve` that answers from a table and fails like getaddrinfo for anything else."""

    async def resolve(host: str) -> list[str]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers[host]

    return resolve


class FakeResolver(AbstractResolver):
    """An aiohttp resolver with fixed answers; records what it was asked."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError(socket.EAI_NONAME, f"no such host {host}")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.answers[host]
        ]

    async def close(self) -> None:
        self.closed = True
