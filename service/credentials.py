"""The service's generated credentials: API keys (shown once, kept only as a hash) and the
signing secrets of subscriptions (kept sealed by `service.store.crypto`)."""

from __future__ import annotations

import hashlib
import secrets

API_KEY_PREFIX = "qe_key_"
SECRET_PREFIX = "qe_whsec_"  # noqa: S105 - a prefix, not a secret
_SHOWN = 4  # characters of a key after its prefix kept to recognise it in a list


def new_api_key() -> str:
    """A new API key: the prefix and 256 random bits."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def api_key_label(key: str) -> str:
    """The first characters of a key, to recognise it in a list without revealing it."""
    return key[: len(API_KEY_PREFIX) + _SHOWN]


def hash_api_key(key: str) -> str:
    """What is stored of a key, and looked up when one is presented."""
    # Keys carry 256 random bits, so a fast hash is as safe as a slow one and keeps auth cheap.
    return hashlib.sha256(key.encode()).hexdigest()


def new_secret() -> str:
    """A new signing secret: the prefix and 256 random bits, hex."""
    return SECRET_PREFIX + secrets.token_hex(32)
