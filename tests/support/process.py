"""`identity-webhooks serve` as a real child process, for crash and multi-replica tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence

import aiohttp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_ready(
    port: int,
    process: asyncio.subprocess.Process,
    exited: Callable[[], BaseException],
    timeout: float = 60,
) -> None:
    """Polls the service's /readyz until it answers 200; raises `exited()` if the process ends
    first, TimeoutError after `timeout`."""
    url = f"http://127.0.0.1:{port}/readyz"
    async with aiohttp.ClientSession() as session, asyncio.timeout(timeout):
        while True:
            if process.returncode is not None:
                raise exited()
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)


class ServiceProcess:
    """One service process; its stderr (JSON logs) is collected for assertions."""

    def __init__(self, env: Mapping[str, str], args: Sequence[str] = ()) -> None:
        self.port = free_port()
        self._args = list(args)
        self._env = {
            **os.environ,
            **env,
            "WEBHOOKS_HTTP_PORT": str(self.port),
            "WEBHOOKS_LOG_FORMAT": "json",
        }
        self.process: asyncio.subprocess.Process | None = None
        self.logs: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> ServiceProcess:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service",
            "serve",
            *self._args,
            env=self._env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.process is not None
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            self.logs.append(line.decode(errors="replace"))

    async def wait_ready(self, timeout: float = 60) -> None:
        assert self.process is not None
        await wait_ready(
            self.port,
            self.process,
            lambda: AssertionError("service exited:\n" + "".join(self.logs[-30:])),
            timeout,
        )

    async def wait(self, timeout: float = 60) -> int:
        assert self.process is not None
        async with asyncio.timeout(timeout):
            code = await self.process.wait()
        if self._reader is not None:
            await self._reader
        return code

    async def stop(self) -> int:
        """SIGTERM and wait: the graceful path."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await self.wait()

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            await self._reader
