"""What the store keeps sealed, and the keys it seals with
(docs/decisions/0007-sealing-and-lookup-keys.md).

`WEBHOOKS_ENCRYPTION_KEY` holds one or more keys, comma-separated, each 32 url-safe base64 bytes
(the form `Fernet.generate_key()` prints): the first seals, all open, so a key is rotated by
putting a new one first, running `identity-webhooks rekey`, then removing the old one. Without
the variable, the embedded SQLite store keeps a generated key in a file beside the database (mode
0600) so `make run` needs no set-up; PostgreSQL, shared by replicas, always needs the variable.

A sealed value is AES-256-GCM under a key derived from one of those (HKDF-SHA256), prefixed by
the format's version and the key's 4-byte id, so opening never tries keys in turn and `rekey`
finds what an older key sealed with a prefix comparison in SQL:

    binary (event bodies):  0x01 | key id (4) | nonce (12) | ciphertext and tag
    text (other columns):   "v1." key id (8 hex) "." base64url(nonce | ciphertext and tag)

Each value is sealed with its context as associated data (`event:<org>:<id>`,
`secret:<subscription>`…): a sealed value copied into another row does not open there.

Signing secrets sealed before this format are Fernet tokens under the same keys; they still
open, and `rekey` seals them again in this format.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

log = structlog.get_logger(__name__)

VERSION = b"\x01"
TEXT_PREFIX = "v1."
_KID = 4
_NONCE = 12
_FERNET_PREFIX = "gAAAAA"  # every Fernet token: version 0x80 and a 64-bit timestamp


class Undecryptable(ValueError):
    """None of the configured keys sealed this value (or it was altered)."""


def _derive(raw: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(raw)


class Keyring:
    """Seals and opens what the store keeps encrypted, with the configured keys."""

    def __init__(self, keys: str) -> None:
        parts = [part.strip() for part in keys.split(",") if part.strip()]
        if not parts:
            raise ValueError("WEBHOOKS_ENCRYPTION_KEY is empty")
        try:
            raws = [base64.urlsafe_b64decode(part.encode()) for part in parts]
            self._fernet = MultiFernet([Fernet(part) for part in parts])
        except ValueError:
            raws = []
        if not raws or any(len(raw) != 32 for raw in raws):
            raise ValueError(
                "WEBHOOKS_ENCRYPTION_KEY must be keys of 32 url-safe base64 bytes, "
                'comma-separated; make one with: python -c "from cryptography.fernet import '
                'Fernet; print(Fernet.generate_key().decode())"'
            )
        self._ciphers: dict[bytes, AESGCM] = {}
        self.key_ids: list[bytes] = []  # in the configured order: the first seals
        for raw in raws:
            key = _derive(raw, b"identity-webhooks/seal/v1")
            kid = hashlib.sha256(b"identity-webhooks/key-id/" + key).digest()[:_KID]
            if kid not in self._ciphers:
                self._ciphers[kid] = AESGCM(key)
                self.key_ids.append(kid)
        self.current = self.key_ids[0]
        self._sealer = self._ciphers[self.current]
        self.text_current = f"{TEXT_PREFIX}{self.current.hex()}."

    # Binary values: event bodies.

    def seal(self, data: bytes, context: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return VERSION + self.current + nonce + self._sealer.encrypt(nonce, data, context)

    def open(self, sealed: bytes, context: bytes) -> bytes:
        if sealed[:1] != VERSION:
            raise Undecryptable("not a sealed value")
        cipher = self._ciphers.get(sealed[1 : 1 + _KID])
        if cipher is None:
            raise Undecryptable("sealed with a key that is not configured")
        start = 1 + _KID
        try:
            return cipher.decrypt(sealed[start : start + _NONCE], sealed[start + _NONCE :], context)
        except InvalidTag:
            raise Undecryptable("altered, or sealed for another row") from None

    # Text values: secrets, header values, response excerpts, the store's own keys.

    def seal_text(self, text: str, context: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._sealer.encrypt(nonce, text.encode(), context.encode())
        return self.text_current + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open_text(self, token: str, context: str) -> str:
        """A text sealed by `seal_text`, or a Fernet token of an older revision."""
        if token.startswith(_FERNET_PREFIX):
            try:
                return self._fernet.decrypt(token.encode()).decode()
            except InvalidToken:
                raise Undecryptable("sealed with a key that is not configured") from None
        version, _, rest = token.partition(".")
        kid_hex, _, payload = rest.partition(".")
        if version + "." != TEXT_PREFIX or len(kid_hex) != 2 * _KID:
            raise Undecryptable("not a sealed value")
        try:
            cipher = self._ciphers.get(bytes.fromhex(kid_hex))
            blob = base64.urlsafe_b64decode(payload.encode())
        except ValueError:
            raise Undecryptable("not a sealed value") from None
        if cipher is None:
            raise Undecryptable("sealed with a key that is not configured")
        try:
            return cipher.decrypt(blob[:_NONCE], blob[_NONCE:], context.encode()).decode()
        except InvalidTag:
            raise Undecryptable("altered, or sealed for another row") from None

    def may_open(self, token: str) -> bool:
        """False when no configured key sealed `token` (its prefix says so, nothing is opened);
        True does not promise it opens: it may have been altered. An older revision's Fernet
        token, or a value kept in clear (a JSON object), counts as one that may."""
        if not token.startswith(TEXT_PREFIX):
            return True
        try:
            return bytes.fromhex(token[len(TEXT_PREFIX) : len(TEXT_PREFIX) + 2 * _KID]) in (
                self._ciphers
            )
        except ValueError:
            return False

    def open_text_or_none(self, token: str, context: str) -> str | None:
        try:
            return self.open_text(token, context)
        except Undecryptable:
            return None

    def text_prefixes(self) -> list[str]:
        """The prefix of a text sealed by each configured key, the sealing one first."""
        return [f"{TEXT_PREFIX}{kid.hex()}." for kid in self.key_ids]

    def binary_prefixes(self) -> list[bytes]:
        """The first bytes of a value sealed by each configured key, the sealing one first."""
        return [VERSION + kid for kid in self.key_ids]


def is_sealed(body: bytes) -> bool:
    """True for a sealed body; an empty one was removed, any other is JSON of an older
    revision, kept in clear until `rekey` seals it."""
    return body[:1] == VERSION


class LookupHasher:
    """The keyed hash a value the store must search by (a customer id) is kept as: equal for
    equal values in one org, and without the key no guess can be checked against it. Keyed
    BLAKE2b (a MAC by design, RFC 7693), 160 bits: as strong here as HMAC-SHA256 and a third of
    its cost on the ingest path."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __call__(self, org_id: str, value: str) -> str:
        message = org_id.encode() + b"\x00" + value.encode("utf-8", "surrogatepass")
        return "c1." + hashlib.blake2b(message, key=self._key, digest_size=20).hexdigest()


def lookup_hash(key: bytes, org_id: str, value: str) -> str:
    """`LookupHasher(key)(org_id, value)`, for one value."""
    return LookupHasher(key)(org_id, value)


def new_lookup_key() -> bytes:
    return os.urandom(32)


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
