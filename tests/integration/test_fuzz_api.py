"""Schemathesis against the real service: every operation of `/openapi.json`, with a valid key.

The service runs as `identity-webhooks serve --no-consumer` on a port of its own (the API and the
dispatcher, with the SSRF guard on), and the schemathesis CLI reads the document it serves and
sends what it generates from it: schema-valid and schema-violating bodies, query strings and path
ids, the coverage phase's boundary values, and stateful chains that follow the document's links
(create, then get, change, test and delete the new id). Every check is on except
`positive_data_acceptance`: a schema cannot say which host names resolve to private addresses or
which cursors this API handed out, so a schema-valid URL or cursor may rightly be a 422.

The checks: no 5xx; every status code, content type, header and body as the document says;
invalid data is rejected; a deleted subscription is gone; auth is never ignored. Afterwards the
service is still up and logged no unexpected error.

`make test` runs FUZZ_EXAMPLES=25 examples per operation with FUZZ_SEED=20261201; `make test-fuzz`
runs many more. The whole schemathesis output is in var/fuzz/schemathesis.txt.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from service.api.openapi import document
from service.settings import load_settings
from service.store import open_store
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support.process import ServiceProcess

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
SEED = int(os.environ.get("FUZZ_SEED", "20261201"))
REPORT = Path("var/fuzz")
CONFIG = Path(__file__).with_name("schemathesis.toml")

pytestmark = pytest.mark.timeout(120 + EXAMPLES)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[ServiceProcess, str]]:
    database_url = f"sqlite:///{tmp_path}/fuzz.db"
    store = await open_store(
        load_settings(database_url=database_url, encryption_key=SecretStr(TEST_ENCRYPTION_KEY))
    )
    try:
        _, key = await store.create_api_key("org_fuzz", "schemathesis")
    finally:
        await store.close()
    service = ServiceProcess(
        {
            "WEBHOOKS_DATABASE_URL": database_url,
            "WEBHOOKS_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
            "WEBHOOKS_ALLOW_PRIVATE_TARGETS": "false",
            "WEBHOOKS_DELIVERY_TIMEOUT": "1s",
            "WEBHOOKS_DELIVERY_CONNECT_TIMEOUT": "1s",
            "WEBHOOKS_LOG_LEVEL": "info",
            # A feed read waits up to `wait` (30 s at most) for nothing here: cut short.
            "WEBHOOKS_FEED_WAIT_MAX": "1s",
        },
        args=["--no-consumer"],
    )
    await service.start()
    try:
        await service.wait_ready()
        yield service, key
    finally:
        await service.stop()


def _keep(text: str) -> None:
    REPORT.mkdir(parents=True, exist_ok=True)
    (REPORT / "schemathesis.txt").write_text(text)


async def test_schemathesis_finds_no_5xx_and_no_departure_from_the_document(
    served: tuple[ServiceProcess, str],
) -> None:
    service, key = served
    schemathesis = Path(sys.executable).parent / "schemathesis"
    process = await asyncio.create_subprocess_exec(
        str(schemathesis),
        "--no-color",
        "--config-file",
        str(CONFIG),
        "run",
        f"http://127.0.0.1:{service.port}/openapi.json",
        "--header",
        f"Authorization: Bearer {key}",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--output-sanitize",
        "true",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    text = out.decode(errors="replace")
    _keep(text)
    assert process.returncode == 0, text[-6000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", text)
    assert generated is not None, text[-2000:]
    cases, passed = int(generated.group(1)), int(generated.group(2))
    print(f"schemathesis: {cases} cases, {passed} passed, seed {SEED}")
    assert cases >= 6 * EXAMPLES  # every operation was exercised, not skipped
    # Every operation of the document was exercised (a route added later is counted by itself).
    verbs = {"get", "put", "post", "delete", "patch"}
    operations = sum(len(verbs & set(item)) for item in document()["paths"].values())
    assert f"Tested: {operations}" in text

    assert service.process is not None
    assert service.process.returncode is None
    unexpected = [line for line in service.logs if "api.unexpected_error" in line]
    assert unexpected == []
    assert key not in "".join(service.logs)
