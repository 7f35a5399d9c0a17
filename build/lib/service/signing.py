"""Webhook signatures: sign a body in both header formats and verify either one (SPEC section 2).

- `X-Identity-Signature: sha256=<hex>` (legacy, GitHub's format): HMAC-SHA256 of the body.
- `X-Quantum-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…]` (Stripe's format): HMAC-SHA256 of
  `"<t>." + body`, one `v1=` per active secret during a rotation overlap.

The HMAC key is the whole secret string (`qe_whsec_…`) as UTF-8; the message is the raw body bytes,
never JSON re-serialised on either side.
"""

from __future__ import annotations

import enum
import hmac
import re
import time
from collections.abc import Sequence

from service.errors import SignatureError


class SignatureHeaders(enum.StrEnum):
    """Which signature headers a delivery carries (SPEC section 2)."""

    LEGACY = "legacy"
    BOTH = "both"
    QUANTUM = "quantum"


LEGACY_HEADER = "X-Identity-Signature"
QUANTUM_HEADER = "X-Quantum-Signature"
DEFAULT_TOLERANCE = 300.0

_LEGACY_PREFIX = "sha256="
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}", re.ASCII)
_UNIX_SECONDS = re.compile(r"[0-9]{1,15}", re.ASCII)


def _hmac_hex(secret: str, message: bytes) -> str:
    return hmac.digest(secret.encode(), message, "sha256").hex()


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


def signature_headers(
    mode: SignatureHeaders, secrets: Sequence[str], body: bytes, timestamp: int
) -> dict[str, str]:
    """The signature headers of one attempt; legacy is signed with `secrets[0]`, the primary.

    `timestamp` is the time of the attempt in unix seconds, so every retry is signed afresh.
    """
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    headers: dict[str, str] = {}
    if mode is not SignatureHeaders.QUANTUM:
        headers[LEGACY_HEADER] = legacy_signature(secrets[0], body)
    if mode is not SignatureHeaders.LEGACY:
        headers[QUANTUM_HEADER] = quantum_signature(secrets, body, timestamp)
    return headers


def verify_signature(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check a header of either format against the raw body; raise `SignatureError` if it fails.

    The format is told by the header: `sha256=…` is legacy (no timestamp, so no replay window),
    anything else is read as `t=…,v1=…`, whose `t` must lie within `tolerance` seconds of `now`
    (default: the current time) in either direction; any one matching `v1=` is enough.
    """
    if not tolerance >= 0:  # also refuses NaN, which would accept any timestamp
        raise ValueError("tolerance must be a number of seconds, zero or more")
    header = header.strip()
    if header.startswith(_LEGACY_PREFIX):
        given = header.removeprefix(_LEGACY_PREFIX)
        if not _HEX_SHA256.fullmatch(given):
            raise SignatureError("malformed_header", "sha256= must be followed by 64 hex digits")
        if not hmac.compare_digest(_hmac_hex(secret, body), given.lower()):
            raise SignatureError("no_matching_signature", "the sha256= signature does not match")
        return
    timestamp, signatures = _parse_quantum(header)
    current = time.time() if now is None else now
    age = current - int(timestamp)
    if abs(age) > tolerance:
        when = "old" if age > 0 else "in the future"
        raise SignatureError(
            "timestamp_outside_tolerance",
            f"t is {abs(age):.0f}s {when}, tolerance is {tolerance:g}s",
        )
    expected = _hmac_hex(secret, timestamp.encode() + b"." + body)
    # Compare against every candidate, so the time taken does not tell which one matched.
    matched = False
    for signature in signatures:
        matched |= hmac.compare_digest(expected, signature.lower())
    if not matched:
        raise SignatureError("no_matching_signature", "no v1= signature matches this secret")


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
