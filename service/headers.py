"""A subscription's static headers: the names and values it may set, how many, which names are
sensitive, and how a PATCH changes them.

A sensitive header's value is write-only: it is sent with every delivery and kept sealed like
every header value, but the API, the command line and the console show only its name, and no log
line carries it. A PATCH's `headers` is a JSON merge patch (RFC 7386) by name, names compared
without case: a value sets or replaces that header, `null` removes it, a name left out is kept
(so a client that sends back the ordinary headers it read does not erase the hidden ones), and
`"headers": null` removes them all. The limits hold for the merged result.

Pure functions: the API's models check a request with them, and the store merges with them in
the transaction that writes the result.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

MAX_HEADERS = 20
MAX_HEADER_BYTES = 4096
# One PATCH may remove every header and set as many new ones.
MAX_PATCH = 2 * MAX_HEADERS

Pairs = tuple[tuple[str, str], ...]
"""Static headers as kept and sent: (name, value) pairs in the order they were set."""
Patch = Mapping[str, str | None]
"""A PATCH's `headers` object: a value sets or replaces the header, None removes it."""

# Both used with `fullmatch`: a `$` would also match before a final line break.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")
# Visible ASCII and inner spaces or tabs (RFC 9110 field values): no CR, LF or NUL.
_FIELD_VALUE = re.compile(r"([\x21-\x7E]([\x20-\x7E\t]*[\x21-\x7E])?)?")
_RESERVED = frozenset(
    {"content-type", "user-agent", "host", "content-length", "x-sibling-service"}
    # Standard Webhooks' (service/signing.py)
    | {"webhook-id", "webhook-timestamp", "webhook-signature"}
    # hop-by-hop and framing: sent by anyone but the HTTP client, they would break the request
    | {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "expect"}
)
_RESERVED_PREFIXES = ("x-identity-", "x-quantum-", "proxy-")

_SENSITIVE_NAMES = frozenset({"authorization", "proxy-authorization", "cookie"})
# A name holding one of these (any case) carries a credential as far as we can tell: X-Api-Key,
# X-Auth-Token, X-Client-Secret, X-Session-Id. A harmless name caught by them (X-Author) only
# has its value hidden; a credential shown would be worse. "cookie" also catches X-Cookie-like
# names beside the `Cookie` header itself.
_SENSITIVE_PARTS = (
    "token",
    "secret",
    "key",
    "password",
    "auth",
    "credential",
    "session",
    "signature",
    "cookie",
)


def is_sensitive(name: str) -> bool:
    """True when the header's value is write-only (see the module docstring)."""
    lower = name.lower()
    return lower in _SENSITIVE_NAMES or any(part in lower for part in _SENSITIVE_PARTS)


def shown(headers: Sequence[tuple[str, str]]) -> tuple[dict[str, str], list[str]]:
    """What may be shown of the headers: the ordinary ones with their values, and the names of
    the sensitive ones (their values never leave the service but with a delivery)."""
    ordinary: dict[str, str] = {}
    sensitive: list[str] = []
    for name, value in headers:
        if is_sensitive(name):
            sensitive.append(name)
        else:
            ordinary[name] = value
    return ordinary, sensitive


def _check_name(name: str, seen: set[str]) -> None:
    lower = name.lower()
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"{name[:64]!r} is not a valid header name")
    if lower in _RESERVED or lower.startswith(_RESERVED_PREFIXES):
        raise ValueError(f"{name!r} is set by the service and cannot be overridden")
    if lower in seen:
        raise ValueError(f"{name!r} is given twice (header names ignore case)")
    seen.add(lower)


def _check_value(name: str, value: str) -> None:
    # The message names the header, never the value (it may be a credential).
    if not _FIELD_VALUE.fullmatch(value):
        raise ValueError(
            f"the value of {name!r} must be visible ASCII (spaces inside), no line breaks"
        )


def check(headers: Mapping[str, str], *, merged: bool = False) -> None:
    """Raises ValueError, saying what is wrong, unless `headers` may be a subscription's static
    headers (`merged`: they are a PATCH's result, so the headers kept count too)."""
    kept = ", those kept included" if merged else ""
    if len(headers) > MAX_HEADERS:
        raise ValueError(f"at most {MAX_HEADERS} headers{kept}")
    if sum(len(k) + len(v) for k, v in headers.items()) > MAX_HEADER_BYTES:
        raise ValueError(f"names and values together are over {MAX_HEADER_BYTES} bytes{kept}")
    seen: set[str] = set()
    for name, value in headers.items():
        _check_name(name, seen)
        _check_value(name, value)


def check_patch(patch: Patch) -> None:
    """Raises ValueError unless `patch` may be a PATCH's `headers`: valid names, each once,
    valid values or null. The limits are the merged result's (`merge`)."""
    if len(patch) > MAX_PATCH:
        raise ValueError(f"at most {MAX_PATCH} headers to set or remove at once")
    seen: set[str] = set()
    for name, value in patch.items():
        _check_name(name, seen)
        if value is not None:
            _check_value(name, value)


def merge(current: Sequence[tuple[str, str]], patch: Patch | None) -> Pairs:
    """The headers after a PATCH's `headers` (see the module docstring): a replaced header
    keeps its place under the name as now spelt, a new one comes last. Raises ValueError when
    the result is over the limits."""
    if patch is None:
        return ()
    headers = list(current)
    for name, value in patch.items():
        lower = name.lower()
        at = next((i for i, (old, _) in enumerate(headers) if old.lower() == lower), None)
        if value is None:
            if at is not None:
                del headers[at]
        elif at is None:
            headers.append((name, value))
        else:
            headers[at] = (name, value)
    check(dict(headers), merged=True)
    return tuple(headers)
