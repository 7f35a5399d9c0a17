"""`python -m bench.client_floor [--rate 50] [--events 500]`: what the two clients this
service must use cost on their own, per lone event, at a low rate.

- Kafka: a bare aiokafka consumer, set up as ingest's (a group, read_committed, auto-commit off,
  the broker answering at once), on the bench's topics (3 topics of 3 partitions), doing nothing
  but `getmany()`, while another process produces `--rate` events/s as the bench does.
- HTTP: a bare aiohttp session POSTing a 600-byte body `--rate` times a second to a receiver in
  another process, reading each answer.

Prints the CPU time of this process per event for each: the floor under the service's own CPU
per delivery at that rate, whatever the service does around the two (a 0.3x target at
50 events/s is judged against it). Expects the local Kafka (WEBHOOKS_TEST_KAFKA).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid

import aiohttp
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from service.ingest import fetch_options

BOOTSTRAP = os.environ.get("WEBHOOKS_TEST_KAFKA", "127.0.0.1:9092")
BODY = b'{"id":"evt_x","type":"verification.created","data":{"status":"approved"}}'.ljust(600)

_PRODUCER = """
import asyncio, sys
from aiokafka import AIOKafkaProducer
async def main(bootstrap, topics, n, rate):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=2)
    await producer.start()
    start = asyncio.get_running_loop().time()
    for i in range(n):
        await producer.send(topics[i % len(topics)], b'{"x": 1}')
        await asyncio.sleep(max(0.0, start + (i + 1) / rate - asyncio.get_running_loop().time()))
    await producer.stop()
asyncio.run(main(sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), float(sys.argv[4])))
"""

_RECEIVER = """
import sys
from aiohttp import web
async def ok(request):
    await request.read()
    return web.Response(text="ok")
app = web.Application()
app.router.add_post("/", ok)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


async def kafka_floor(rate: float, events: int, fetch_wait: float = 0.0) -> float:
    """CPU µs per record of a bare consumer, its fetch held by the broker as ingest's is
    (`fetch_options`: at once, or up to `fetch_wait` for a batch, as in a stream)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    topics = [f"floor.{uuid.uuid4().hex[:8]}.{i}" for i in range(3)]
    await admin.create_topics([NewTopic(t, 3, 1) for t in topics])
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=BOOTSTRAP,
        group_id=f"floor-{uuid.uuid4().hex}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        **fetch_options(fetch_wait),
    )
    try:
        await consumer.start()
        await consumer.getmany(timeout_ms=3000)  # joined and assigned
        cpu = time.process_time()
        producer = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _PRODUCER, BOOTSTRAP, ",".join(topics), str(events), str(rate)
        )
        got = 0
        while got < events:
            batch = await consumer.getmany(timeout_ms=500)
            got += sum(len(records) for records in batch.values())
        spent = time.process_time() - cpu
        await producer.wait()
        return spent / events * 1e6
    finally:
        await consumer.stop()
        await admin.delete_topics(topics)
        await admin.close()


async def http_floor(rate: float, events: int) -> float:
    """CPU µs per POST of a bare pooled session."""
    port = 20000 + os.getpid() % 20000
    receiver = await asyncio.create_subprocess_exec(sys.executable, "-c", _RECEIVER, str(port))
    url = f"http://127.0.0.1:{port}/"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):  # until the receiver listens
                try:
                    async with session.post(url, data=BODY) as response:
                        await response.read()
                    break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            loop = asyncio.get_running_loop()
            cpu, start = time.process_time(), loop.time()
            for i in range(events):
                async with session.post(
                    url, data=BODY, headers={"Content-Type": "application/json"}
                ) as response:
                    await response.read()
                await asyncio.sleep(max(0.0, start + (i + 1) / rate - loop.time()))
            return (time.process_time() - cpu) / events * 1e6
    finally:
        receiver.terminate()
        await receiver.wait()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="events/s (%(default)s)")
    parser.add_argument("--events", type=int, default=500, help="events each (%(default)s)")
    parser.add_argument(
        "--fetch-wait",
        type=float,
        default=0.0,
        help="seconds the broker may hold a fetch for a batch (0: answer at once; ingest holds "
        "for STREAM_FETCH_WAIT in a stream)",
    )
    args = parser.parse_args()
    kafka = await kafka_floor(args.rate, args.events, args.fetch_wait)
    http = await http_floor(args.rate, args.events)
    print(
        f"at {args.rate:g} events/s: a bare aiokafka consumer {kafka:,.0f} us CPU per record, "
        f"a bare aiohttp POST {http:,.0f} us; together {kafka + http:,.0f} us per event"
    )


if __name__ == "__main__":
    asyncio.run(main())
