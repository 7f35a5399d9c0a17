"""Generated credentials: API keys (kept as a hash, recognised by a label) and signing
secrets."""

from __future__ import annotations

import re

from service import credentials


def test_api_keys_are_random_prefixed_and_kept_as_a_stable_hash() -> None:
    key, other = credentials.new_api_key(), credentials.new_api_key()
    assert key != other
    assert re.fullmatch(r"qe_key_[A-Za-z0-9_\-]{43}", key)
    assert credentials.hash_api_key(key) == credentials.hash_api_key(key)
    assert credentials.hash_api_key(key) != credentials.hash_api_key(other)
    assert re.fullmatch(r"[0-9a-f]{64}", credentials.hash_api_key(key))


def test_a_key_is_recognised_by_its_prefix_and_four_characters() -> None:
    key = credentials.new_api_key()
    assert credentials.api_key_label(key) == key[:11]
    assert credentials.api_key_label(key).startswith(credentials.API_KEY_PREFIX)


def test_signing_secrets_are_random_prefixed_hex() -> None:
    secret = credentials.new_secret()
    assert secret != credentials.new_secret()
    assert re.fullmatch(r"qe_whsec_[0-9a-f]{64}", secret)
