"""Signing secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) from `cryptography`.

`WEBHOOKS_ENCRYPTION_KEY` holds one or more Fernet keys, comma-separated: the first encrypts, all
decrypt, so a key can be rotated without downtime. Without a key, the embedded SQLite store keeps a
generated one in a file beside the database (mode 0600) so `make run` needs no set-up; PostgreSQL,
shared by replicas, always needs the variable.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

log = structlog.get_logger(__name__)


class SecretBox:
    """Encrypts and decrypts subscription secrets."""

    def __init__(self, keys: str) -> None:
        parts = [part.strip() for part in keys.split(",") if part.strip()]
        if not parts:
            raise ValueError("WEBHOOKS_ENCRYPTION_KEY is empty")
        try:
            self._fernet = MultiFernet([Fernet(part) for part in parts])
        except ValueError:
            raise ValueError(
                "WEBHOOKS_ENCRYPTION_KEY must be Fernet keys (32 url-safe base64 bytes), "
                'comma-separated; make one with: python -c "from cryptography.fernet import '
                'Fernet; print(Fernet.generate_key().decode())"'
            ) from None

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open_or_none(self, token: str) -> str | None:
        """The secret, or None when none of the configured keys sealed it."""
        try:
            return self.open(token)
        except ValueError:
            return None

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ValueError(
                "a signing secret cannot be decrypted: WEBHOOKS_ENCRYPTION_KEY does not hold "
                "the key it was sealed with"
            ) from None


def key_file_for(sqlite_path: Path) -> str:
    """The generated key of an embedded store, created on first use."""
    key_path = sqlite_path.with_name(sqlite_path.name + ".key")
    if key_path.exists():
        return key_path.read_text().strip()
    key_path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key().decode()
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    log.warning(
        "encryption_key.generated",
        path=str(key_path),
        hint="set WEBHOOKS_ENCRYPTION_KEY in production",
    )
    return key
