"""`identity-webhooks serve` as a real child process, for crash and multi-replica tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp
from pydantic import SecretStr

from service.settings import Settings, load_settings
from tests.conftest import TEST_ENCRYPTION_KEY

_PORT_TAKEN = "is taken; "  # how service/app.py refuses a port already in use


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
    """One service process; its stderr (JSON logs) is collected for assertions, and so is its
    standard output (`output`), where nothing is expected."""

    def __init__(
        self, env: Mapping[str, str], module: str = "service", args: Sequence[str] = ()
    ) -> None:
        """Runs `python -m <module> serve <args>`: the service, or a test wrapper of it."""
        self.port = free_port()
        self._module = module
        self._args = list(args)
        self._env = {
            **os.environ,
            **env,
            "WEBHOOKS_HTTP_PORT": str(self.port),
            "WEBHOOKS_LOG_FORMAT": "json",
        }
        self.process: asyncio.subprocess.Process | None = None
        self._retries = 0
        self.logs: list[str] = []
        self.output: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> ServiceProcess:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self._module,
            "serve",
            *self._args,
            env=self._env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.process is not None
        assert self.process.stderr is not None
        assert self.process.stdout is not None

        async def lines(stream: asyncio.StreamReader, into: list[str]) -> None:
            async for line in stream:
                into.append(line.decode(errors="replace"))

        await asyncio.gather(
            lines(self.process.stderr, self.logs), lines(self.process.stdout, self.output)
        )

    async def wait_ready(self, timeout: float = 60) -> None:
        async with asyncio.timeout(timeout):
            while True:
                assert self.process is not None
                try:
                    await wait_ready(self.port, self.process, self._exited, timeout)
                    return
                except AssertionError:
                    if not await self._started_elsewhere():
                        raise

    async def wait_for_log(self, text: str, timeout: float = 60) -> None:
        """Until a line of its stderr holds `text`; AssertionError if it exits first."""
        async with asyncio.timeout(timeout):
            while not any(text in line for line in self.logs):
                assert self.process is not None
                if self.process.returncode is not None and not await self._started_elsewhere():
                    raise self._exited()
                await asyncio.sleep(0.05)

    def _exited(self) -> AssertionError:
        return AssertionError("service exited:\n" + "".join(self.logs[-30:]))

    async def _started_elsewhere(self) -> bool:
        """When the process exited because its port was taken between `free_port` and its
        bind (by another test's outgoing connection, say), started again on another: True."""
        if self._reader is not None:
            await self._reader  # the exited child's last lines
        if self._retries >= 3 or not any(_PORT_TAKEN in line for line in self.logs):
            return False
        self._retries += 1
        self.logs.clear()
        self.port = free_port()
        self._env["WEBHOOKS_HTTP_PORT"] = str(self.port)
        await self.start()
        return True

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


def service_settings(database_url: str, kafka_bootstrap: str, **overrides: Any) -> Settings:
    """Settings of a service on this store and broker, with the suite's encryption key;
    `overrides` sets any other field."""
    return load_settings(
        database_url=database_url,
        encryption_key=SecretStr(TEST_ENCRYPTION_KEY),
        kafka_bootstrap_servers=kafka_bootstrap,
        **overrides,
    )


def service_env(
    settings: Settings, topics: Sequence[str], group: str | None = None, **extra: str
) -> dict[str, str]:
    """The environment of a `serve` child on these topics (the first three, then the DLQ) and
    this store, quick to notice faults; `extra` overrides any of it."""
    return {
        "WEBHOOKS_DATABASE_URL": settings.database_url,
        "WEBHOOKS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
        "WEBHOOKS_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "WEBHOOKS_KAFKA_TOPICS": ",".join(topics[:3]),
        "WEBHOOKS_KAFKA_DLQ_TOPIC": topics[3],
        "WEBHOOKS_KAFKA_GROUP_ID": group or f"g-{uuid.uuid4().hex[:8]}",
        "WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true",
        "WEBHOOKS_LEASE": "1s",
        "WEBHOOKS_POLL_INTERVAL": "100ms",
        "WEBHOOKS_INDEX_REFRESH": "500ms",
        "WEBHOOKS_SHUTDOWN_GRACE": "2s",
        **extra,
    }
