"""Put on the service child's PYTHONPATH by `bench.profile --stages` (see
`bench.stages`)."""

import os

if os.environ.get("WEBHOOKS_BENCH_STAGES"):
    from bench import stages

    stages.arm(os.environ["WEBHOOKS_BENCH_STAGES"])
