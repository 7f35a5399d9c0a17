"""Wait until a Kafka broker answers a metadata request (not merely accepts a TCP connection).

Usage: python -m tools.kafka_ready HOST:PORT TIMEOUT_SECONDS
Exits 0 once the cluster metadata lists at least one broker and a controller, 1 on timeout.
"""

import asyncio
import contextlib
import logging
import sys
import time

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError


async def answers(bootstrap: str) -> bool:
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await client.bootstrap()
        metadata = await client.fetch_all_metadata()
        return bool(metadata.brokers()) and metadata.controller is not None
    except (KafkaError, OSError):
        return False
    finally:
        with contextlib.suppress(Exception):
            await client.close()


async def main(bootstrap: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await answers(bootstrap):
            return 0
        await asyncio.sleep(0.5)
    return 1


if __name__ == "__main__":
    # Refused connections are expected while the broker starts; only the verdict matters.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    sys.exit(asyncio.run(main(sys.argv[1], float(sys.argv[2]))))
