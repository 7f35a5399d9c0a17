"""The verification examples of docs/receivers.md run in their own runtimes: each language's
snippet is extracted from the page, put beside its harness in tests/receivers/<language>/,
installed or built under .cache/receivers/<language>/ (again only when the inputs change, so a
second run costs nothing) and run once over a file of deliveries, one verdict per line."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECEIVERS_MD = ROOT / "docs" / "receivers.md"
SOURCES = ROOT / "tests" / "receivers"
CACHE = ROOT / ".cache" / "receivers"
TAG = "standard-webhooks"  # the info string's second word on the page: ```go standard-webhooks
INSTALL_TIMEOUT = 600


def snippet(language: str) -> str:
    """The one ```<language> standard-webhooks block of docs/receivers.md."""
    found = re.findall(rf"^```{language} {TAG}\n(.*?)^```$", RECEIVERS_MD.read_text(), re.M | re.S)
    assert len(found) == 1, f"receivers.md needs exactly one ```{language} {TAG} block"
    return str(found[0])


@dataclass(frozen=True)
class Delivery:
    """One delivery as a receiver holding `key` sees it: which check (`hmac` or `ed25519`),
    the key (a whsec_ secret or a whpk_ public key), the three webhook-* headers and the body."""

    kind: str
    key: str
    delivery_id: str
    timestamp: str
    signature: str
    body: bytes

    def line(self) -> str:
        fields = (self.kind, self.key, self.delivery_id, self.timestamp, self.signature)
        assert not any(("\t" in f or "\n" in f) for f in fields)
        return "\t".join([*fields, base64.b64encode(self.body).decode()])


def _run(command: Sequence[str], cwd: Path, **env: str) -> None:
    subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, **env},
        check=True,
        timeout=INSTALL_TIMEOUT,
        capture_output=True,
    )


def _fresh(place: Path, inputs: dict[str, str]) -> bool:
    """True when `place` was made from exactly `inputs` (file name: text); else it is emptied
    and the inputs written into it, to be installed or built."""
    digest = hashlib.sha256(repr(sorted(inputs.items())).encode()).hexdigest()
    stamp = place / ".made-from"
    if stamp.exists() and stamp.read_text() == digest:
        return True
    shutil.rmtree(place, ignore_errors=True)
    for name, text in inputs.items():
        (place / name).parent.mkdir(parents=True, exist_ok=True)
        (place / name).write_text(text)
    return False


def _done(place: Path, inputs: dict[str, str]) -> None:
    digest = hashlib.sha256(repr(sorted(inputs.items())).encode()).hexdigest()
    (place / ".made-from").write_text(digest)


def _inputs(language: str, snippet_name: str, *names: str) -> dict[str, str]:
    files = {name: (SOURCES / language / name).read_text() for name in names}
    return {**files, snippet_name: snippet(_FENCE[language])}


_FENCE = {"python": "python", "node": "js", "go": "go", "java": "java"}


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} is not installed: the receivers' examples need it"
    return path


def prepare(language: str) -> list[str]:
    """Installs or builds `language`'s example (when its inputs changed); the command that runs
    it over deliveries on standard input."""
    place = CACHE / language
    if language == "python":
        inputs = _inputs("python", "snippet.py", "requirements.txt", "harness.py")
        python = place / "venv" / "bin" / "python"
        if not _fresh(place, inputs):
            _run([sys.executable, "-m", "venv", str(place / "venv")], place)
            _run([str(python), "-m", "pip", "install", "-q", "-r", "requirements.txt"], place)
            _done(place, inputs)
        return [str(python), str(place / "harness.py")]
    if language == "node":
        inputs = _inputs("node", "snippet.js", "package.json", "package-lock.json", "harness.js")
        inputs["verify.js"] = inputs["snippet.js"] + "\n" + inputs["harness.js"]
        if not _fresh(place, inputs):
            cache = str(CACHE / "npm-cache")
            _run([_tool("npm"), "ci", "--no-audit", "--no-fund", "--cache", cache], place)
            _done(place, inputs)
        return [_tool("node"), str(place / "verify.js")]
    if language == "go":
        inputs = _inputs("go", "receiver/verify.go", "go.mod", "go.sum", "main.go")
        binary = place / "verify"
        if not _fresh(place, inputs):
            _run(
                [_tool("go"), "build", "-o", str(binary), "."],
                place,
                # The modules under .cache; Go's own build cache (the standard library's
                # packages, shared by every Go build on the machine) where it always is.
                GOMODCACHE=str(CACHE / "go-mod"),
                GOFLAGS="-mod=readonly -buildvcs=false",
                GOTOOLCHAIN="local",
            )
            _done(place, inputs)
        return [str(binary)]
    if language == "java":
        inputs = _inputs("java", "WebhookVerifier.java", "Harness.java")
        if not _fresh(place, inputs):
            _run([_tool("javac"), "-d", "classes", "WebhookVerifier.java", "Harness.java"], place)
            _done(place, inputs)
        return [_tool("java"), "-cp", str(place / "classes"), "Harness"]
    raise ValueError(f"no receiver example in {language}")


def verdicts(command: Sequence[str], deliveries: Sequence[Delivery]) -> list[str]:
    """Runs an example once over every delivery; its verdicts, one per delivery, as printed."""
    run = subprocess.run(
        command,
        input="".join(d.line() + "\n" for d in deliveries),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == len(deliveries), run.stdout + run.stderr
    return [line.strip().lower() for line in lines]
