"""Webhook signatures: sign a delivery in each header scheme and verify any of them
(docs/contract.md, "Webhooks out"; docs/decisions/0010-standard-webhooks-and-ed25519.md).

- `legacy`: `X-Identity-Signature: sha256=<hex>` (GitHub's format), HMAC-SHA256 of the body.
- `quantum`: `X-Quantum-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…]` (Stripe's format),
  HMAC-SHA256 of `"<t>." + body`, one `v1=` per live secret during a rotation overlap.
- `standard` (Standard Webhooks): `webhook-id`, `webhook-timestamp` and
  `webhook-signature: v1,<base64>[ v1,<base64>…]`, HMAC-SHA256 of `"<id>.<t>." + body` per live
  secret; an Ed25519 subscription's is `v1a,<base64>` per live key pair instead.

The HMAC key is the whole secret string (`qe_whsec_…`) as UTF-8, in every scheme: its Standard
Webhooks form is `whsec_` and the standard base64 of those bytes (`standard_secret`). The message
is the raw body bytes, never JSON re-serialised on either side.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import hmac
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from service.errors import SignatureError


class Scheme(enum.StrEnum):
    """A signature scheme a delivery can carry (`WEBHOOKS_SIGNATURE_HEADERS`)."""

    LEGACY = "legacy"
    QUANTUM = "quantum"
    STANDARD = "standard"


ALL_SCHEMES: tuple[Scheme, ...] = tuple(Scheme)
# What the setting's single values of earlier revisions meant, kept: `both` never included
# the Standard Webhooks headers, which came later.
_OLD_VALUES = {"both": (Scheme.LEGACY, Scheme.QUANTUM)}


def parse_schemes(value: object) -> tuple[Scheme, ...]:
    """The schemes of `WEBHOOKS_SIGNATURE_HEADERS` (a comma-separated list, or an earlier
    revision's single value), in their canonical order, each once."""
    items = [item.strip() for item in value.split(",")] if isinstance(value, str) else value
    if not isinstance(items, list | tuple | set | frozenset):
        raise ValueError("expected a comma-separated list of legacy, quantum, standard")
    chosen: set[Scheme] = set()
    for item in items:
        name = str(item).strip().lower()
        if not name:
            continue
        if name in _OLD_VALUES:
            chosen.update(_OLD_VALUES[name])
            continue
        try:
            chosen.add(Scheme(name))
        except ValueError:
            raise ValueError(
                f"{name!r} is not a signature scheme: use legacy, quantum, standard "
                "(comma-separated) or both"
            ) from None
    if not chosen:
        raise ValueError("name at least one of legacy, quantum, standard")
    return tuple(scheme for scheme in ALL_SCHEMES if scheme in chosen)


LEGACY_HEADER = "X-Identity-Signature"
QUANTUM_HEADER = "X-Quantum-Signature"
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
DEFAULT_TOLERANCE = 300.0

STANDARD_SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
PUBLIC_KEY_PREFIX = "whpk_"
_LEGACY_PREFIX = "sha256="
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}", re.ASCII)
_UNIX_SECONDS = re.compile(r"[0-9]{1,15}", re.ASCII)


def _hmac_hex(secret: str, message: bytes) -> str:
    return hmac.digest(secret.encode(), message, "sha256").hex()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def standard_secret(secret: str) -> str:
    """The secret in Standard Webhooks' form: `whsec_` + base64 of its UTF-8 bytes, which are
    the HMAC key of every scheme, so Standard Webhooks' libraries verify with it."""
    return STANDARD_SECRET_PREFIX + _b64(secret.encode())


def secret_from_standard(text: str) -> str:
    """The secret a `whsec_…` form stands for (anything else is taken as the secret itself)."""
    if not text.startswith(STANDARD_SECRET_PREFIX):
        return text
    try:
        return base64.b64decode(text.removeprefix(STANDARD_SECRET_PREFIX), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("a whsec_ secret must be base64 of the secret's UTF-8 bytes") from None


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A subscription's Ed25519 key pair: the 32-byte private seed (kept sealed) and the 32 raw
    bytes of its public key (published)."""

    private: bytes
    public: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        key = Ed25519PrivateKey.generate()
        return cls(key.private_bytes_raw(), public_key_bytes(key))


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def public_key_text(public: bytes) -> str:
    """The published form of a public key: `whpk_` + standard base64 of its 32 raw bytes."""
    return PUBLIC_KEY_PREFIX + _b64(public)


def public_key_from_text(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text.removeprefix(PUBLIC_KEY_PREFIX), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise ValueError("a public key is whpk_ and base64 of 32 bytes") from None


@functools.lru_cache(maxsize=4096)
def _private_key(seed: bytes) -> Ed25519PrivateKey:
    """Loading a key costs as much as a signature: each live key is loaded once."""
    return Ed25519PrivateKey.from_private_bytes(seed)


def legacy_signature(secret: str, body: bytes) -> str:
    """The `X-Identity-Signature` value: `sha256=<hex HMAC-SHA256(secret, body)>`."""
    return _LEGACY_PREFIX + _hmac_hex(secret, body)


def quantum_signature(secrets: Sequence[str], body: bytes, timestamp: int) -> str:
    """The `X-Quantum-Signature` value: `t=<timestamp>` then one `v1=` per secret, in order."""
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    prefix = f"t={timestamp}"
    message = f"{timestamp}.".encode() + body
    return ",".join([prefix, *("v1=" + _hmac_hex(secret, message) for secret in secrets)])


def standard_signature(
    secrets: Sequence[str], delivery_id: str, timestamp: int, body: bytes
) -> str:
    """The `webhook-signature` value of an HMAC subscription: `v1,<base64>` per secret, in
    order, space-separated."""
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    message = f"{delivery_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + _b64(hmac.digest(secret.encode(), message, "sha256")) for secret in secrets
    )


def ed25519_signature(
    private_keys: Sequence[bytes], delivery_id: str, timestamp: int, body: bytes
) -> str:
    """The `webhook-signature` value of an Ed25519 subscription: `v1a,<base64>` per key (the
    32-byte private seeds), in order, space-separated."""
    if not private_keys:
        raise ValueError("at least one key is needed to sign")
    message = f"{delivery_id}.{timestamp}.".encode() + body
    return " ".join("v1a," + _b64(_private_key(seed).sign(message)) for seed in private_keys)


def signature_headers(
    schemes: Iterable[Scheme],
    secrets: Sequence[str],
    body: bytes,
    timestamp: int,
    delivery_id: str,
    *,
    private_keys: Sequence[bytes] = (),
    hmac_headers: bool = True,
) -> dict[str, str]:
    """The signature headers of one attempt; legacy is signed with `secrets[0]`, the primary.

    `timestamp` is the time of the attempt in unix seconds, so every retry is signed afresh.
    With `private_keys` (an Ed25519 subscription's live keys) the Standard Webhooks header is
    `v1a`. The legacy and quantum headers go only with `hmac_headers`; the Standard Webhooks
    headers go whenever they would otherwise be missing (an Ed25519 subscription, or one
    without the HMAC headers): they are then its only signature, or its asymmetric one.
    """
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    chosen = frozenset(schemes)
    headers: dict[str, str] = {}
    if hmac_headers and Scheme.LEGACY in chosen:
        headers[LEGACY_HEADER] = legacy_signature(secrets[0], body)
    if hmac_headers and Scheme.QUANTUM in chosen:
        headers[QUANTUM_HEADER] = quantum_signature(secrets, body, timestamp)
    if Scheme.STANDARD in chosen or private_keys or not hmac_headers:
        headers[ID_HEADER] = delivery_id
        headers[TIMESTAMP_HEADER] = str(timestamp)
        headers[SIGNATURE_HEADER] = (
            ed25519_signature(private_keys, delivery_id, timestamp, body)
            if private_keys
            else standard_signature(secrets, delivery_id, timestamp, body)
        )
    return headers


def verify_signature(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check a legacy or quantum header against the raw body; raise `SignatureError` if it
    fails.

    The format is told by the header: `sha256=…` is legacy (no timestamp, so no replay window),
    anything else is read as `t=…,v1=…`, whose `t` must lie within `tolerance` seconds of `now`
    (default: the current time) in either direction; any one matching `v1=` is enough.
    """
    _check_tolerance(tolerance)
    header = header.strip()
    if header.startswith(_LEGACY_PREFIX):
        given = header.removeprefix(_LEGACY_PREFIX)
        if not _HEX_SHA256.fullmatch(given):
            raise SignatureError("malformed_header", "sha256= must be followed by 64 hex digits")
        if not hmac.compare_digest(_hmac_hex(secret, body), given.lower()):
            raise SignatureError("no_matching_signature", "the sha256= signature does not match")
        return
    timestamp, signatures = _parse_quantum(header)
    _check_timestamp(timestamp, tolerance, now)
    expected = _hmac_hex(secret, timestamp.encode() + b"." + body)
    # Compare against every candidate, so the time taken does not tell which one matched.
    matched = False
    for signature in signatures:
        matched |= hmac.compare_digest(expected, signature.lower())
    if not matched:
        raise SignatureError("no_matching_signature", "no v1= signature matches this secret")


def verify_standard(
    key: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check Standard Webhooks headers (`webhook-id`, `webhook-timestamp`, `webhook-signature`,
    names in any case) against the raw body; raise `SignatureError` if they fail. `key` is a
    public key (`whpk_…`: its `v1a,` signatures are checked) or a secret, in either form
    (`whsec_…` or `qe_whsec_…`: its `v1,` signatures); the timestamp must lie within
    `tolerance` seconds of `now`, and any one matching signature is enough."""
    _check_tolerance(tolerance)
    lower = {name.lower(): value for name, value in headers.items()}
    delivery_id = lower.get(ID_HEADER, "")
    timestamp = lower.get(TIMESTAMP_HEADER, "").strip()
    signatures = lower.get(SIGNATURE_HEADER, "").split()
    if not delivery_id or not signatures:
        raise SignatureError("malformed_header", "webhook-id and webhook-signature are needed")
    if not _UNIX_SECONDS.fullmatch(timestamp):
        raise SignatureError("malformed_header", "webhook-timestamp must be unix seconds")
    _check_timestamp(timestamp, tolerance, now)
    message = f"{delivery_id}.{timestamp}.".encode() + body
    if key.startswith(PUBLIC_KEY_PREFIX):
        try:
            public = public_key_from_text(key)
        except ValueError as exc:
            raise SignatureError("malformed_key", str(exc)) from None
        for item in signatures:
            version, _, value = item.partition(",")
            if version != "v1a":
                continue
            try:
                public.verify(base64.b64decode(value, validate=True), message)
            except (binascii.Error, InvalidSignature):
                continue
            return
        raise SignatureError("no_matching_signature", "no v1a signature matches this key")
    try:
        secret = secret_from_standard(key)
    except ValueError as exc:
        raise SignatureError("malformed_key", str(exc)) from None
    expected = "v1," + _b64(hmac.digest(secret.encode(), message, "sha256"))
    matched = False
    for item in signatures:
        matched |= hmac.compare_digest(expected.encode(), item.encode())
    if not matched:
        raise SignatureError("no_matching_signature", "no v1 signature matches this secret")


def _check_tolerance(tolerance: float) -> None:
    if not tolerance >= 0:  # also refuses NaN, which would accept any timestamp
        raise ValueError("tolerance must be a number of seconds, zero or more")


def _check_timestamp(timestamp: str, tolerance: float, now: float | None) -> None:
    current = time.time() if now is None else now
    age = current - int(timestamp)
    if abs(age) > tolerance:
        when = "old" if age > 0 else "in the future"
        raise SignatureError(
            "timestamp_outside_tolerance",
            f"the timestamp is {abs(age):.0f}s {when}, tolerance is {tolerance:g}s",
        )


def _parse_quantum(header: str) -> tuple[str, list[str]]:
    timestamp: str | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise SignatureError("malformed_header", "expected t=<seconds>,v1=<hex>")
        if key == "t":
            if timestamp is not None or not _UNIX_SECONDS.fullmatch(value):
                raise SignatureError("malformed_header", "t= must appear once, as unix seconds")
            timestamp = value
        elif key == "v1":
            if not _HEX_SHA256.fullmatch(value):
                raise SignatureError("malformed_header", "v1= must be followed by 64 hex digits")
            signatures.append(value)
        # Other schemes (a future v2=) are ignored, as Stripe's receivers do.
    if timestamp is None:
        raise SignatureError("malformed_header", "no t= timestamp")
    if not signatures:
        raise SignatureError("malformed_header", "no v1= signature")
    return timestamp, signatures
