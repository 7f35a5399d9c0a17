"""The verification snippets of docs/receivers.md work against real signatures."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from service.signing import legacy_signature, quantum_signature

RECEIVERS = Path(__file__).resolve().parents[2] / "docs" / "receivers.md"
SECRET = "qe_whsec_a8f3c92e5b1d4e7f9a0b2c4d6e8f0a1b"
OTHER_SECRET = "qe_whsec_0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld0l"
BODY = (
    '{"id":"evt_01HXY","event":"review.overridden","occurredAt":"2026-05-24T11:42:08.122Z",'
    '"orgId":"org_01HXY","data":{"verificationId":"ver_1","customerId":"cus_1",'
    '"actorUserId":"usr_1","fromStatus":"requires_review","toStatus":"verified",'
    '"reason":"Glare on hologram — approved ✓"}}'
).encode()
TAMPERED = BODY.replace(b"verified", b"rejected")


def snippet(language: str) -> str:
    found = re.findall(
        rf"^```{language} verify-snippet\n(.*?)^```$", RECEIVERS.read_text(), re.M | re.S
    )
    assert len(found) == 1, f"receivers.md needs exactly one ```{language} verify-snippet block"
    return str(found[0])


def cases() -> list[tuple[str, str, str, bytes, bool]]:
    """(kind, secret, header, body, expected verdict) for both formats."""
    now = int(time.time())
    quantum = quantum_signature([SECRET], BODY, now)
    rotating = quantum_signature([OTHER_SECRET, SECRET], BODY, now)
    legacy = legacy_signature(SECRET, BODY)
    return [
        ("quantum", SECRET, quantum, BODY, True),
        ("quantum", SECRET, rotating, BODY, True),
        ("quantum", SECRET, f" {quantum.replace(',', ', ')} ", BODY, True),
        ("quantum", SECRET, quantum, TAMPERED, False),
        ("quantum", SECRET, quantum, BODY + b" ", False),
        ("quantum", "qe_whsec_wrong", quantum, BODY, False),
        ("quantum", SECRET, quantum_signature([SECRET], BODY, now - 3600), BODY, False),
        ("quantum", SECRET, quantum_signature([SECRET], BODY, now + 3600), BODY, False),
        ("quantum", SECRET, quantum.split(",")[1], BODY, False),
        ("quantum", SECRET, f"t={now}", BODY, False),
        ("quantum", SECRET, "garbage", BODY, False),
        ("quantum", SECRET, "", BODY, False),
        ("legacy", SECRET, legacy, BODY, True),
        ("legacy", SECRET, legacy, TAMPERED, False),
        ("legacy", "qe_whsec_wrong", legacy, BODY, False),
        ("legacy", SECRET, legacy[:-2], BODY, False),
        ("legacy", SECRET, "", BODY, False),
    ]


def test_the_python_snippet_verifies() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(snippet("python"), "docs/receivers.md", "exec"), namespace)
    verify_quantum = cast(Callable[[str, str, bytes], bool], namespace["verify_quantum"])
    verify_legacy = cast(Callable[[str, str, bytes], bool], namespace["verify_legacy"])
    for kind, secret, header, body, expected in cases():
        verify = verify_quantum if kind == "quantum" else verify_legacy
        assert verify(secret, header, body) is expected, (kind, header, body)


HARNESS = """
let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const results = JSON.parse(input).map(([kind, secret, header, body]) => {
    const raw = Buffer.from(body, "base64");
    const verify = kind === "quantum" ? verifyQuantum : verifyLegacy;
    return verify(secret, header, raw);
  });
  process.stdout.write(JSON.stringify(results));
});
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_node_snippet_verifies(tmp_path: Path) -> None:
    script = tmp_path / "verify.js"
    script.write_text(snippet("js") + HARNESS)
    table = cases()
    payload = [
        [kind, secret, header, base64.b64encode(body).decode()]
        for kind, secret, header, body, _ in table
    ]
    node = shutil.which("node")
    assert node is not None
    run = subprocess.run(
        [node, str(script)],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    results = json.loads(run.stdout)
    assert results == [expected for *_, expected in table], run.stderr
