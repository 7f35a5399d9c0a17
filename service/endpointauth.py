"""A subscription's authentication toward its endpoint, as data: the form it is kept in (one
sealed JSON object), the checks of its certificates and key at registration, what of it may be
shown, and the certificate facts health and the metrics report
(docs/decisions/0011-endpoint-authentication.md).

Pure functions over `cryptography`'s X.509 and key parsers: the API checks a request with them,
the store turns the stored form into domain types with them, and delivery builds its TLS
contexts from what they accepted.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from service.clock import iso
from service.domain import ClientAuth, EndpointAuth, MutualTls, OAuthClientCredentials

MAX_PEM = 16 * 1024
"""Characters of one PEM field at most (a chain of a few certificates, a key, a CA bundle)."""
EXPIRING_WITHIN = 30 * 86400
"""Seconds before a client certificate's end from which health, a gauge and an alert say so."""
KEEP_SECRET = ""
"""A PATCH's `clientSecret` left out: the stored one is kept (`merged`)."""


# -- the stored form -----------------------------------------------------------------------------


def dumps(auth: EndpointAuth) -> str:
    """The JSON kept (sealed) in the subscription's row."""
    if isinstance(auth, OAuthClientCredentials):
        plain: dict[str, Any] = {
            "type": "oauth2_client_credentials",
            "tokenUrl": auth.token_url,
            "clientId": auth.client_id,
            "clientSecret": auth.client_secret,
            "scope": auth.scope,
            "audience": auth.audience,
            "clientAuth": auth.client_auth.value,
        }
    else:
        plain = {"type": "mtls", "certificate": auth.certificate, "privateKey": auth.private_key}
    return orjson.dumps(plain).decode()


def loads(text: str) -> EndpointAuth:
    """The domain type of a stored (opened) JSON object."""
    plain = orjson.loads(text)
    if plain["type"] == "mtls":
        return MutualTls(certificate=plain["certificate"], private_key=plain["privateKey"])
    return OAuthClientCredentials(
        token_url=plain["tokenUrl"],
        client_id=plain["clientId"],
        client_secret=plain["clientSecret"],
        scope=plain.get("scope"),
        audience=plain.get("audience"),
        client_auth=ClientAuth(plain.get("clientAuth", "basic")),
    )


def keeps_secret(auth: EndpointAuth | None) -> bool:
    """True for a PATCH's OAuth `auth` that leaves its client secret out."""
    return isinstance(auth, OAuthClientCredentials) and auth.client_secret == KEEP_SECRET


def merged(stored: EndpointAuth | None, given: EndpointAuth) -> EndpointAuth:
    """A PATCH's `auth` over the stored one: an OAuth client secret left out (`KEEP_SECRET`) is
    the stored one's. Raises ValueError when there is none to keep."""
    if not isinstance(given, OAuthClientCredentials) or given.client_secret != KEEP_SECRET:
        return given
    if not isinstance(stored, OAuthClientCredentials):
        raise ValueError(
            "clientSecret is required: the subscription has no OAuth client secret to keep"
        )
    return OAuthClientCredentials(
        token_url=given.token_url,
        client_id=given.client_id,
        client_secret=stored.client_secret,
        scope=given.scope,
        audience=given.audience,
        client_auth=given.client_auth,
    )


# -- checks at registration ----------------------------------------------------------------------


def check_certificate_chain(pem: str) -> list[x509.Certificate]:
    """The certificates of a PEM chain, the leaf first; ValueError saying what is wrong (never
    quoting the input)."""
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise ValueError("must be PEM: -----BEGIN CERTIFICATE----- …")
    try:
        certificates = x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        raise ValueError("is not a readable PEM certificate") from None
    if not certificates:
        raise ValueError("holds no certificate")
    return certificates


def check_mtls(certificate: str, private_key: str, now: datetime | None = None) -> None:
    """Raises ValueError (with the field, `certificate` or `privateKey`, first) unless the
    certificate chain is readable and current and the key is an unencrypted PEM private key
    that belongs to its leaf."""
    try:
        leaf = check_certificate_chain(certificate)[0]
    except ValueError as exc:
        raise ValueError(f"certificate: {exc}") from None
    if leaf.not_valid_after_utc <= (now or datetime.now(UTC)):
        raise ValueError(f"certificate: expired at {_iso(leaf.not_valid_after_utc)}")
    if "PRIVATE KEY-----" not in private_key:
        raise ValueError("privateKey: must be PEM: -----BEGIN PRIVATE KEY----- …")
    try:
        key = serialization.load_pem_private_key(private_key.encode(), password=None)
    except TypeError:
        raise ValueError("privateKey: is encrypted; give it without a passphrase") from None
    except (ValueError, UnicodeError):
        raise ValueError("privateKey: is not a readable PEM private key") from None
    if not isinstance(
        key,
        rsa.RSAPrivateKey
        | ec.EllipticCurvePrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):
        raise ValueError("privateKey: is not an RSA, EC or EdDSA key")
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(
        serialization.Encoding.DER, public
    ) != leaf.public_key().public_bytes(serialization.Encoding.DER, public):
        raise ValueError("privateKey: does not belong to the certificate (the first in the chain)")


def check_ca_bundle(pem: str) -> None:
    """Raises ValueError unless `pem` holds at least one readable CA certificate."""
    check_certificate_chain(pem)


# -- what may be shown ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    """What is shown of a certificate: never the key, and no need for the PEM itself."""

    subject: str
    issuer: str
    not_after: int  # epoch ms
    sha256: str  # the fingerprint, hex


@functools.lru_cache(maxsize=4096)
def certificate_facts(pem: str) -> CertificateFacts:
    """The first certificate of a PEM chain described (cached: the same PEMs are read by every
    listing and every gauge reading)."""
    leaf = check_certificate_chain(pem)[0]
    return CertificateFacts(
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        not_after=int(leaf.not_valid_after_utc.timestamp() * 1000),
        sha256=leaf.fingerprint(_SHA256).hex(),
    )


def shown(auth: EndpointAuth | None) -> dict[str, Any] | None:
    """`auth` as reads show it: its type and non-secret fields; for mTLS the certificate's
    subject, issuer, expiry and fingerprint. Never the client secret or the private key."""
    if auth is None:
        return None
    if isinstance(auth, OAuthClientCredentials):
        return {
            "type": "oauth2_client_credentials",
            "tokenUrl": auth.token_url,
            "clientId": auth.client_id,
            "scope": auth.scope,
            "audience": auth.audience,
            "clientAuth": auth.client_auth.value,
        }
    return {"type": "mtls", "certificate": certificate_shown(auth.certificate)}


def certificate_shown(pem: str) -> dict[str, Any]:
    facts = certificate_facts(pem)
    return {
        "subject": facts.subject,
        "issuer": facts.issuer,
        "notAfter": iso(facts.not_after),
        "sha256": facts.sha256,
    }


def client_certificate_expiry(auth: EndpointAuth | None) -> int | None:
    """When a subscription's client certificate ends (epoch ms); None without one."""
    if not isinstance(auth, MutualTls):
        return None
    return certificate_facts(auth.certificate).not_after


_SHA256 = hashes.SHA256()


def _iso(when: datetime) -> str:
    return iso(int(when.timestamp() * 1000))
