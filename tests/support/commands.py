"""A command run as people and scripts run it: `python -m MODULE …` in a child process, with the
configuration in `WEBHOOKS_*` variables and none of the developer's."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


async def run_module(module: str, *args: str, env: Mapping[str, str], cwd: Path) -> Result:
    """`python -m module args` in `cwd`: the repository root is on the path (tools/ is not
    installed), and only the `WEBHOOKS_*` variables of `env` are set."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WEBHOOKS_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())
