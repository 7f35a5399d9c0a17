"""`identity-webhooks serve` answers health checks and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys

import aiohttp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_serve_answers_healthz_and_stops_on_sigterm(tmp_path: os.PathLike[str]) -> None:
    port = free_port()
    env = {
        **os.environ,
        "WEBHOOKS_HTTP_PORT": str(port),
        "WEBHOOKS_DATABASE_URL": f"sqlite:///{tmp_path}/webhooks.db",
        "WEBHOOKS_LOG_FORMAT": "json",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "serve", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(30):
                while True:
                    try:
                        async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                            assert response.status == 200
                            assert await response.json() == {"status": "ok"}
                            break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await process.wait() == 0
        assert process.stderr is not None
        logs = (await process.stderr.read()).decode()
        assert '"service.stopped"' in logs
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
