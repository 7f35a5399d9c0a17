"""The far side of endpoint authentication, real and on loopback: a private PKI made with
`cryptography` (a CA, a server certificate for 127.0.0.1, client certificates), an OAuth token
server (client credentials grant) that issues short-lived tokens and can be told to fail, a
receiver that accepts only a current token, and a TLS receiver that requires a client
certificate."""

from __future__ import annotations

import asyncio
import base64
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# -- a private PKI -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, PEM."""

    certificate: str
    key: str = field(repr=False)
    subject: str = ""

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        cert, key = directory / f"{name}.crt", directory / f"{name}.key"
        cert.write_text(self.certificate)
        key.write_text(self.key)
        return cert, key


class Pki:
    """A CA of its own that issues server and client certificates."""

    def __init__(self, name: str = "Test Root CA") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.now(UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        self.certificate = self._cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, common_name: str, *, server: bool = False, days: float = 90) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Bank"),
                    ]
                )
            )
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(IPv4Address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
        cert = builder.sign(self._key, hashes.SHA256())
        return Issued(
            cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
            cert.subject.rfc4514_string(),
        )


def server_context(pki: Pki, directory: Path, *, require_client: bool) -> ssl.SSLContext:
    """A TLS server's context: a certificate of `pki` for 127.0.0.1; with `require_client`, a
    client certificate of `pki` is required on every handshake."""
    cert, key = pki.issue("127.0.0.1", server=True).write(directory, "server")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if require_client:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=pki.certificate)
    return context


# -- servers -------------------------------------------------------------------------------------


@asynccontextmanager
async def serve(app: web.Application, context: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """`app` on a free loopback port (TLS with `context`); yields the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        server = site._server
        assert server is not None
        yield server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    finally:
        await runner.cleanup()


@dataclass
class TokenServer:
    """An OAuth 2.0 token endpoint (client credentials grant) with one client."""

    client_id: str
    client_secret: str = field(repr=False)
    lifetime: float = 2.0
    answers: list[int] = field(default_factory=list)  # statuses to give before tokens
    issued: dict[str, float] = field(default_factory=dict)  # token: when it expires (monotonic)
    fetches: list[float] = field(default_factory=list)  # when tokens were asked for
    forms: list[dict[str, str]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/oauth/token"

    def current(self, token: str) -> bool:
        return time.monotonic() < self.issued.get(token, 0.0)

    def revoke_all(self) -> None:
        """Every token issued so far stops being current (the gateway rotated its keys)."""
        self.issued = dict.fromkeys(self.issued, 0.0)

    async def handle(self, request: web.Request) -> web.Response:
        self.fetches.append(time.monotonic())
        form = dict(await request.post())
        self.forms.append({k: str(v) for k, v in form.items()})
        if self.answers:
            status = self.answers.pop(0)
            return web.json_response({"error": "temporarily_unavailable"}, status=status)
        client = (form.get("client_id"), form.get("client_secret"))
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            client = (user, password)
        if client != (self.client_id, self.client_secret) or form.get("grant_type") != (
            "client_credentials"
        ):
            return web.json_response({"error": "invalid_client"}, status=401)
        token = "at-" + secrets.token_urlsafe(24)
        self.issued[token] = time.monotonic() + self.lifetime
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime}
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[TokenServer]:
        app = web.Application()
        app.router.add_post("/oauth/token", self.handle)
        async with serve(app) as port:
            self.port = port
            yield self


@dataclass
class GatedReceiver:
    """A receiver behind a gateway that accepts only a current token of `tokens`."""

    tokens: TokenServer
    accepted: list[str] = field(default_factory=list)  # delivery ids
    refused: int = 0
    port: int = 0

    def url(self, path: str = "hook") -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not self.tokens.current(token):
            self.refused += 1
            return web.json_response({"error": "invalid_token"}, status=401)
        self.accepted.append(request.headers["X-Identity-Delivery"])
        return web.Response(status=204)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[GatedReceiver]:
        app = web.Application()
        app.router.add_post("/{path}", self.handle)
        async with serve(app) as port:
            self.port = port
            yield self


@dataclass
class TlsReceiver:
    """A TLS receiver; each request is noted with the subject of the client certificate it
    came with (or None)."""

    context: ssl.SSLContext
    got: list[tuple[str, str | None]] = field(default_factory=list)  # (path, client subject)
    port: int = 0

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}/{path}"

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        transport = request.transport
        peer = transport.get_extra_info("peercert") if transport is not None else None
        subject = None
        if peer:
            subject = ",".join(f"{k}={v}" for rdn in peer["subject"] for k, v in rdn)
        self.got.append((request.match_info["path"], subject))
        return web.Response(status=204)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[TlsReceiver]:
        app = web.Application()
        app.router.add_post("/{path}", self.handle)
        async with serve(app, self.context) as port:
            self.port = port
            yield self


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Polls `predicate()` until true, failing after `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"waited {timeout:g}s for {what}") from None
