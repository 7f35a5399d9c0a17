"""Put on the service child's PYTHONPATH by `tests.bench.profile --stages` (see
`tests.bench.stages`)."""

import os

if os.environ.get("WEBHOOKS_BENCH_STAGES"):
    from tests.bench import stages

    stages.arm(os.environ["WEBHOOKS_BENCH_STAGES"])
