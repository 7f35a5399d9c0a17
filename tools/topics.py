"""Creates the Kafka topics the demo needs (`WEBHOOKS_KAFKA_TOPICS` and the DLQ topic) when
they are missing: a consumer subscribed to a missing topic would only see it after its next
metadata refresh, minutes later.

    python -m tools.topics
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from service.settings import SettingsError, load_settings


async def ensure_topics(bootstrap: str, names: Sequence[str], partitions: int = 3) -> list[str]:
    """Creates those of `names` that do not exist yet (replication 1: a local broker);
    returns the ones it created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="identity-webhooks-demo")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in dict.fromkeys(names) if name not in existing]
        if missing:
            await admin.create_topics([NewTopic(name, partitions, 1) for name in missing])
        return missing
    finally:
        await admin.close()


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    names = [*settings.kafka_topics, settings.kafka_dlq_topic]
    created = asyncio.run(ensure_topics(settings.kafka_bootstrap_servers, names))
    print(f"created topics: {', '.join(created)}" if created else "topics exist")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
