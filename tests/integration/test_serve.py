"""`identity-webhooks serve` answers health checks and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys

import aiohttp

from tests.support.process import ServiceProcess


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


async def test_serve_on_a_taken_port_names_the_setting_to_change(
    tmp_path: os.PathLike[str],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "WEBHOOKS_HTTP_PORT": str(port),
            "WEBHOOKS_DATABASE_URL": f"sqlite:///{tmp_path}/webhooks.db",
            "WEBHOOKS_LOG_FORMAT": "json",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service",
            "serve",
            "--no-consumer",
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(30):
            _, stderr = await process.communicate()
    assert process.returncode == 1
    failed = [line for line in stderr.decode().splitlines() if '"service.start_failed"' in line]
    assert failed
    assert f"port {port} on 127.0.0.1 is taken; set WEBHOOKS_HTTP_PORT" in failed[0]


async def test_a_test_process_whose_port_was_taken_meanwhile_starts_on_another(
    tmp_path: os.PathLike[str],
) -> None:
    """tests/support/process.py picks a free port before the child binds it; another test's
    socket can take it in between (a clean-clone CI run lost a test to that): the child is
    started again on another port instead of failing the test."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, not listening: as a client's socket holds it
        child = ServiceProcess(
            {"WEBHOOKS_DATABASE_URL": f"sqlite:///{tmp_path}/webhooks.db"}, args=["--no-consumer"]
        )
        child.port = taken.getsockname()[1]
        child._env["WEBHOOKS_HTTP_PORT"] = str(child.port)
        await child.start()
        try:
            await child.wait_ready(timeout=60)
            assert child.port != taken.getsockname()[1]
        finally:
            await child.stop()
