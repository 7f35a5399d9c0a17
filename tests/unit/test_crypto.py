"""The key ring (service/store/crypto.py): what it seals opens only with a configured key and only
in the row it was sealed for; key ids tell which key sealed a value; Fernet tokens of an older
revision still open; customer ids become keyed hashes."""

from __future__ import annotations

import base64
import re

import pytest
from cryptography.fernet import Fernet

from service.store import crypto
from service.store.crypto import Keyring, Undecryptable

# Fixed, so that xdist's workers collect the same parameters.
K1 = base64.urlsafe_b64encode(bytes(range(32))).decode()
K2 = base64.urlsafe_b64encode(bytes(range(32, 64))).decode()
BODY = b'{"data":{"customerId":"3174012345678901"}}'
CONTEXT = b"event:org_a:evt_1"


def test_a_sealed_body_opens_in_its_own_context_only() -> None:
    ring = Keyring(K1)
    sealed = ring.seal(BODY, CONTEXT)

    assert ring.open(sealed, CONTEXT) == BODY
    assert BODY not in sealed
    assert sealed[:1] == crypto.VERSION
    assert sealed[1:5] == ring.current
    assert len(sealed) == 1 + 4 + 12 + len(BODY) + 16  # version, key id, nonce, tag
    assert ring.seal(BODY, CONTEXT) != sealed  # a fresh nonce each time
    assert crypto.is_sealed(sealed)
    assert not crypto.is_sealed(BODY)
    assert not crypto.is_sealed(b"")
    # Copied into another event's row (or another org's), it does not open.
    for elsewhere in (b"event:org_a:evt_2", b"event:org_b:evt_1"):
        with pytest.raises(Undecryptable, match="another row"):
            ring.open(sealed, elsewhere)


def test_an_altered_value_does_not_open() -> None:
    ring = Keyring(K1)
    sealed = bytearray(ring.seal(BODY, CONTEXT))
    sealed[-1] ^= 1
    with pytest.raises(Undecryptable):
        ring.open(bytes(sealed), CONTEXT)
    with pytest.raises(Undecryptable, match="not a sealed value"):
        ring.open(BODY, CONTEXT)


def test_the_first_key_seals_and_every_configured_key_opens() -> None:
    old, rotated, new_only = Keyring(K1), Keyring(f"{K2}, {K1}"), Keyring(K2)
    by_old = old.seal(BODY, CONTEXT)
    by_rotated = rotated.seal(BODY, CONTEXT)

    assert rotated.key_ids == [new_only.current, old.current]
    assert rotated.current == new_only.current != old.current
    assert rotated.binary_prefixes() == [crypto.VERSION + kid for kid in rotated.key_ids]
    assert by_rotated[:5] == rotated.binary_prefixes()[0]
    assert by_old[:5] == rotated.binary_prefixes()[1]
    assert rotated.open(by_old, CONTEXT) == BODY
    assert new_only.open(by_rotated, CONTEXT) == BODY
    # Without the key that sealed it: said so, never tried against the others.
    with pytest.raises(Undecryptable, match="not configured"):
        new_only.open(by_old, CONTEXT)
    with pytest.raises(Undecryptable, match="not configured"):
        old.open(by_rotated, CONTEXT)


def test_key_ids_are_stable_and_a_repeated_key_counts_once() -> None:
    assert Keyring(K1).current == Keyring(K1).current
    assert Keyring(f"{K1},{K1},{K2}").key_ids == Keyring(f"{K1},{K2}").key_ids
    assert len(Keyring(K1).current) == 4


def test_a_sealed_text_is_prefixed_by_its_format_and_key() -> None:
    ring = Keyring(f"{K2},{K1}")
    secret = "qe_whsec_" + "ab" * 32
    sealed = ring.seal_text(secret, "secret:whk_1")

    assert sealed.startswith(ring.text_current)
    assert ring.text_current == f"v1.{ring.current.hex()}."
    assert ring.text_prefixes() == [f"v1.{kid.hex()}." for kid in ring.key_ids]
    assert re.fullmatch(r"v1\.[0-9a-f]{8}\.[A-Za-z0-9_-]+=*", sealed)
    assert secret not in sealed
    assert ring.open_text(sealed, "secret:whk_1") == secret
    with pytest.raises(Undecryptable, match="another row"):
        ring.open_text(sealed, "secret:whk_2")
    assert ring.open_text_or_none(sealed, "secret:whk_2") is None
    older = Keyring(K1).seal_text(secret, "secret:whk_1")
    assert older.startswith(ring.text_prefixes()[1])
    assert ring.open_text(older, "secret:whk_1") == secret
    with pytest.raises(Undecryptable, match="not configured"):
        Keyring(K2).open_text(older, "secret:whk_1")


@pytest.mark.parametrize(
    "token",
    ["", "{}", "v1.", "v1.zz.abc", "v1.0011223344.abc", "v2.00112233.abc", "v1.00112233.@@@"],
)
def test_anything_else_is_not_a_sealed_text(token: str) -> None:
    with pytest.raises(Undecryptable):
        Keyring(K1).open_text(token, "secret:whk_1")


def test_a_fernet_token_of_an_older_revision_still_opens() -> None:
    token = Fernet(K1.encode()).encrypt(b"qe_whsec_legacy").decode()
    assert token.startswith("gAAAAA")
    assert Keyring(f"{K2},{K1}").open_text(token, "secret:whk_1") == "qe_whsec_legacy"
    assert Keyring(K1).open_text(token, "any context: Fernet has none") == "qe_whsec_legacy"
    with pytest.raises(Undecryptable, match="not configured"):
        Keyring(K2).open_text(token, "secret:whk_1")


@pytest.mark.parametrize(
    "keys", ["", " , ", "not base64!", base64.urlsafe_b64encode(b"short").decode(), f"{K1},nope"]
)
def test_a_malformed_key_list_is_refused_with_how_to_make_one(keys: str) -> None:
    with pytest.raises(ValueError, match="WEBHOOKS_ENCRYPTION_KEY"):
        Keyring(keys)


def test_customer_ids_become_keyed_hashes() -> None:
    key, other_key = crypto.new_lookup_key(), crypto.new_lookup_key()
    nik = "3174012345678901"
    hashed = crypto.lookup_hash(key, "org_a", nik)

    assert re.fullmatch(r"c1\.[0-9a-f]{40}", hashed)
    assert nik not in hashed
    assert crypto.lookup_hash(key, "org_a", nik) == hashed  # an erasure finds it again
    assert crypto.lookup_hash(key, "org_b", nik) != hashed  # per org
    assert crypto.lookup_hash(other_key, "org_a", nik) != hashed  # no key, no guess to check
    assert crypto.lookup_hash(key, "org_a", "3174012345678902") != hashed
