"""`python -m tests.support.stall_before_commit serve`: the service, except that at its first
Kafka offset commit — after its first batch is recorded — it prints `stalled-before-commit` to
stderr and freezes (the event loop blocked), so that a test can SIGKILL it from outside at exactly
that point. A test hook kept out of the shipped code and settings."""

from __future__ import annotations

import sys
import threading
from typing import Any
from unittest.mock import patch

from aiokafka import AIOKafkaConsumer

from service.cli import main

MARK = "stalled-before-commit"


async def _stall(self: AIOKafkaConsumer, *args: Any, **kwargs: Any) -> None:
    print(MARK, file=sys.stderr, flush=True)
    threading.Event().wait()  # blocks the loop: nothing more happens until the kill


if __name__ == "__main__":
    with patch.object(AIOKafkaConsumer, "commit", _stall):
        raise SystemExit(main(sys.argv[1:]))
