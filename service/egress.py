"""Where webhooks may be sent: the URL rules and the SSRF guard (docs/contract.md: "Webhooks
out", "The API").

This module owns two checks of one policy:

- at registration and PATCH, `vet_url` applies the static URL rules (`check_url`) and refuses a
  host that is, or resolves to, a non-public address (a name that does not resolve is accepted:
  DNS can be split or briefly down);
- at every delivery, `make_connector` builds the pooled aiohttp connector whose `GuardedResolver`
  refuses forbidden answers and hands aiohttp exactly the vetted addresses, so aiohttp connects to
  what was checked and never looks the name up a second time (no DNS rebinding). aiohttp does not
  call the resolver for literal-IP URLs, so `check_literal_target` covers those before a request,
  and a socket factory re-checks every address right before `connect()` as the last line.

`WEBHOOKS_ALLOW_PRIVATE_TARGETS=true` (`allow_private=True`) lifts the address checks and allows
`http`, for local development and tests; the other URL rules still hold.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
import sys
import unicodedata
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TypeAlias

import aiohttp
import yarl
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from service.errors import TargetRefused, TargetRejected

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolve: TypeAlias = Callable[[str], Awaitable[list[str]]]
"""Looks a host name up and returns its addresses as strings; raises `OSError` when it cannot."""

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT = 2.0
DNS_CACHE_TTL = 60
KEEPALIVE_TIMEOUT = 15.0

# aiohttp warns (DeprecationWarning) when enable_cleanup_closed is set on an interpreter that has
# the CPython fix for leaked SSL transports (3.12.8+, 3.13.1+); only older ones still need it.
_NEEDS_CLEANUP_CLOSED = sys.version_info < (3, 12, 8) or (3, 13, 0) <= sys.version_info < (3, 13, 1)

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# Most specific first: the first match names the reason. Explicit networks rather than only the
# `ipaddress` properties, whose definitions changed between Python patch releases.
_IPV4_RULES: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("169.254.169.254/32"), "link-local address {} (cloud metadata service)"),
    (_V4("255.255.255.255/32"), "broadcast address {}"),
    (_V4("0.0.0.0/32"), "unspecified address {}"),
    (_V4("0.0.0.0/8"), "'this network' address {}"),
    (_V4("127.0.0.0/8"), "loopback address {}"),
    (_V4("10.0.0.0/8"), "private address {}"),
    (_V4("172.16.0.0/12"), "private address {}"),
    (_V4("192.168.0.0/16"), "private address {}"),
    (_V4("100.64.0.0/10"), "carrier-grade NAT address {}"),
    (_V4("169.254.0.0/16"), "link-local address {}"),
    (_V4("192.0.0.0/24"), "IETF protocol assignment address {}"),
    (_V4("192.0.2.0/24"), "documentation address {}"),
    (_V4("198.51.100.0/24"), "documentation address {}"),
    (_V4("203.0.113.0/24"), "documentation address {}"),
    (_V4("198.18.0.0/15"), "benchmarking address {}"),
    (_V4("192.88.99.0/24"), "deprecated 6to4 relay address {}"),
    (_V4("224.0.0.0/4"), "multicast address {}"),
    (_V4("240.0.0.0/4"), "reserved address {}"),
)
_IPV6_RULES: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "unspecified address {}"),
    (_V6("::1/128"), "loopback address {}"),
    (_V6("fe80::/10"), "link-local address {}"),
    (_V6("fc00::/7"), "unique-local (private) address {}"),
    (_V6("fec0::/10"), "site-local address {}"),
    (_V6("ff00::/8"), "multicast address {}"),
    (_V6("2001:db8::/32"), "documentation address {}"),
    (_V6("3fff::/20"), "documentation address {}"),
    (_V6("2001:2::/48"), "benchmarking address {}"),
    (_V6("2001::/32"), "Teredo address {}"),
    (_V6("2001:10::/28"), "deprecated ORCHID address {}"),
    (_V6("100::/64"), "discard-only address {}"),
    # Local-use NAT64 (RFC 8215): where the IPv4 address sits depends on the prefix length the
    # operator chose (RFC 6052 section 2.2), so it cannot be read reliably; IANA marks the block
    # not globally reachable. Refused outright, unlike the well-known 64:ff9b::/96.
    (_V6("64:ff9b:1::/48"), "local-use NAT64 address {}"),
    (_V6("::/8"), "reserved address {}"),
    (_V6("5f00::/16"), "segment-routing address {}"),
)
_NAT64_WELL_KNOWN = _V6("64:ff9b::/96")
_IPV4_COMPATIBLE = _V6("::/96")

_HEX_DIGITS = frozenset("0123456789abcdef")
_OCTAL_DIGITS = frozenset("01234567")
_DECIMAL_DIGITS = frozenset("0123456789")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")
# Dots that IDNA (UTS 46) maps to "." after NFKC: the ideographic full stop survives NFKC.
_IDEOGRAPHIC_FULL_STOP = "\u3002"


def check_url(url: str, *, allow_private: bool) -> str:
    """Apply the static rules to a webhook URL and return it unchanged, or raise `TargetRejected`.

    Rules: a string of at most 2048 characters without spaces or control characters; absolute;
    scheme `https` (`http` too when `allow_private`); a valid host name or IP address written the
    standard way; no user-info; no IPv6 zone id; a port from 1 to 65535; no fragment.

    A fragment is rejected rather than stripped: it is never sent to the server, so keeping it
    would mislead, and silently storing a different URL than the one given would surprise the
    integrator. Nothing else is normalised either: what was given is what is stored.
    """
    if not isinstance(url, str):
        raise TargetRejected("must be a string")
    if len(url) > MAX_URL_LENGTH:
        raise TargetRejected(f"must be at most {MAX_URL_LENGTH} characters")
    # yarl silently drops tabs and newlines (as browsers do), so a URL that looks different from
    # what is delivered to could slip through; refuse them instead.
    if any(char.isspace() or unicodedata.category(char) == "Cc" for char in url):
        raise TargetRejected("must not contain spaces or control characters")
    if "#" in url:
        raise TargetRejected("must not contain a fragment (#...): it is never sent to the server")
    parsed = _parse(url)
    allowed = ("http", "https") if allow_private else ("https",)
    if not parsed.scheme:
        raise TargetRejected("must be an absolute URL such as https://example.com/webhooks")
    if parsed.scheme not in allowed:
        raise TargetRejected("must use http or https" if allow_private else "must use https")
    if not parsed.raw_host:
        raise TargetRejected("must include a host name")
    # yarl drops an empty user-info ("https://@host/"); look at the authority as written too.
    authority = re.split(r"[/?#]", url.partition("://")[2], maxsplit=1)[0]
    if parsed.raw_user is not None or parsed.raw_password is not None or "@" in authority:
        raise TargetRejected("must not contain user-info (user:password@)")
    if parsed.explicit_port == 0:
        raise TargetRejected("port must be a number from 1 to 65535")
    _check_host(parsed.raw_host)
    return url


def forbidden_reason(address: IPAddress) -> str | None:
    """Why a delivery must not go to `address` (e.g. "loopback address 127.0.0.1"), or None.

    IPv6 forms that carry an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64 64:ff9b::/96,
    6to4, Teredo) are judged by the address they carry, because that is where packets end up.
    """
    if isinstance(address, ipaddress.IPv4Address):
        return _ipv4_reason(address)
    if address.scope_id is not None:
        address = ipaddress.IPv6Address(int(address))
    embedded = _embedded_ipv4(address)
    for form, inner in embedded:
        reason = _ipv4_reason(inner)
        if reason is not None:
            return f"{form} address {address} embeds {reason}"
    if embedded and _translates_to_ipv4(address):
        return None
    for network, template in _IPV6_RULES:
        if address in network:
            return template.format(address)
    return _property_reason(address)


def literal_address(host: str) -> IPAddress | None:
    """The IP address `host` spells, in any spelling a resolver treats as numeric, or None.

    Understands dotted, decimal, hex, octal and short IPv4 forms (`127.0.0.1`, `2130706433`,
    `0x7f000001`, `0x7f.0.0.1`, `0177.0.0.1`, `127.1`), bracketed IPv6 and IPv6 with a zone id,
    one trailing dot, percent-encoding and full-width digits. Never raises.
    """
    if not isinstance(host, str) or not host or len(host) > 1024:
        return None
    text = host
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text).replace(_IDEOGRAPHIC_FULL_STOP, ".")
        if not text.isascii():
            return None
    if ":" in text:
        text = text.partition("%")[0]  # a zone id (`%eth0`, `%25eth0`) only picks the interface
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            return None
    if "%" in text:
        decoded = urllib.parse.unquote(text)
        return literal_address(decoded) if "%" not in decoded else None
    text = text.lower()
    if text.endswith("."):
        text = text[:-1]
    value = _inet_aton(text)
    return None if value is None else ipaddress.IPv4Address(value)


async def vet_url(
    url: str,
    *,
    allow_private: bool,
    resolver: Resolve | None = None,
    resolve_timeout: float = RESOLVE_TIMEOUT,
) -> str:
    """Check a URL for registration or PATCH and return it unchanged, or raise `TargetRejected`.

    `check_url`, then, unless `allow_private`: a literal IP host must be public; a host name must
    resolve only to public addresses. A name that does not resolve (or not within
    `resolve_timeout`) is accepted: every delivery checks it again at connect time.
    """
    checked = check_url(url, allow_private=allow_private)
    if allow_private:
        return checked
    host = _parse(checked).raw_host or ""
    literal = literal_address(host)
    if literal is not None:
        reason = forbidden_reason(literal)
        if reason is not None:
            raise TargetRejected(f"must not point at a private or reserved address ({reason})")
        return checked
    name = host.removesuffix(".")
    if name == "localhost" or name.endswith(".localhost"):
        # RFC 6761: resolvers may answer loopback for these without asking DNS.
        raise TargetRejected(f"must not point at the local machine ({host})")
    lookup = resolver or _getaddrinfo
    try:
        async with asyncio.timeout(resolve_timeout):
            addresses = await lookup(host)
    except OSError:  # gaierror, and TimeoutError from the deadline: accepted, see docstring
        return checked
    for text in addresses:
        address = literal_address(text)
        if address is None:
            raise TargetRejected(f"host {host} resolves to an unreadable address {text!r}")
        reason = forbidden_reason(address)
        if reason is not None:
            raise TargetRejected(
                f"host {host} resolves to a private or reserved address ({reason})"
            )
    return checked


def check_literal_target(url: yarl.URL | str, *, allow_private: bool) -> None:
    """Before a delivery: refuse a URL whose host is a forbidden literal IP address.

    aiohttp connects to literal-IP hosts without asking the resolver, so `GuardedResolver` never
    sees them; this gives those the same check, with a readable reason, before any request.
    """
    if allow_private:
        return
    parsed = url if isinstance(url, yarl.URL) else _parse(url)
    for host in (parsed.raw_host, parsed.host):
        literal = literal_address(host or "")
        reason = None if literal is None else forbidden_reason(literal)
        if reason is not None:
            raise TargetRejected(f"must not point at a private or reserved address ({reason})")


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that refuses forbidden addresses and returns only vetted ones.

    If any address the inner resolver returns is forbidden, the whole lookup fails with
    `TargetRefused` (dropping only the bad ones would let a name aim at internal services
    whenever its public address is down). Otherwise the inner resolver's entries are returned
    as they are, and aiohttp connects to those very addresses. A host that is itself an IP
    address in a spelling aiohttp does not recognise (`0x7f000001`) is answered here, without
    a lookup.
    """

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        # A resolver handed in belongs to the caller (aiohttp's own convention for connectors).
        self._owns_inner = inner is None
        self._inner: AbstractResolver = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve `host` with the inner resolver; raise `TargetRefused` on any bad address."""
        literal = literal_address(host)
        if literal is not None:
            _refuse_if_forbidden(host, literal)
            return [
                ResolveResult(
                    hostname=host,
                    host=str(literal),
                    port=port,
                    family=socket.AF_INET if literal.version == 4 else socket.AF_INET6,
                    proto=0,
                    flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
            ]
        entries = await self._inner.resolve(host, port, family)
        for entry in entries:
            address = literal_address(entry["host"])
            if address is None:
                raise TargetRefused(
                    f"refused by the SSRF guard: {host} resolved to an unreadable address "
                    f"{entry['host']!r}"
                )
            _refuse_if_forbidden(host, address)
        return entries

    async def close(self) -> None:
        """Close the inner resolver if this one created it."""
        if self._owns_inner:
            await self._inner.close()


def make_connector(
    *,
    allow_private: bool,
    limit: int,
    resolver: AbstractResolver | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> aiohttp.TCPConnector:
    """The pooled keep-alive connector for the delivery `ClientSession`.

    Unless `allow_private`, lookups go through a `GuardedResolver` wrapping `resolver` (aiohttp's
    default resolver when None) and every socket is checked right before it connects. Per-endpoint
    limits live in the dispatcher, so there is no per-host limit here; `limit` caps the total
    (0: no cap, for a caller that bounds its connections before it asks, as the dispatcher's
    `ConnectionBudget` does, since a wait in aiohttp's pool counts against a request's timeout).
    `ssl_context` is what its TLS connections verify with and present (None: aiohttp's default,
    the system's CAs). Must be called with an event loop running; the session must keep
    `trust_env=False` (the default), since a proxy would connect on our behalf where the guard
    cannot see.
    """
    guarded = None if allow_private else GuardedResolver(resolver)
    connector = _OwningConnector(
        resolver=guarded if guarded is not None else resolver,
        socket_factory=None if allow_private else _guarded_socket,
        limit=limit,
        limit_per_host=0,
        ttl_dns_cache=DNS_CACHE_TTL,
        keepalive_timeout=KEEPALIVE_TIMEOUT,
        enable_cleanup_closed=_NEEDS_CLEANUP_CLOSED,
        ssl=True if ssl_context is None else ssl_context,
    )
    connector.owned_resolver = guarded
    return connector


class _OwningConnector(aiohttp.TCPConnector):
    """A TCPConnector that also closes the resolver `make_connector` created for it.

    aiohttp closes only resolvers it created itself, and the `GuardedResolver` is ours.
    """

    owned_resolver: AbstractResolver | None = None

    async def close(self, *, abort_ssl: bool = False) -> None:
        try:
            await super().close(abort_ssl=abort_ssl)
        finally:
            if self.owned_resolver is not None:
                await self.owned_resolver.close()


def _guarded_socket(addr_info: AddrInfoType) -> socket.socket:
    # The last check, right before connect(): it sees every address aiohttp is about to use,
    # literal-IP URLs included, so a caller that forgot check_literal_target is still covered.
    family, kind, proto, _, sockaddr = addr_info
    host = str(sockaddr[0])
    address = literal_address(host)
    if address is None:
        raise TargetRefused(f"refused by the SSRF guard: {host!r} is not a numeric address")
    _refuse_if_forbidden(host, address)
    return socket.socket(family=family, type=kind, proto=proto)


def _refuse_if_forbidden(host: str, address: IPAddress) -> None:
    reason = forbidden_reason(address)
    if reason is None:
        return
    where = reason if host == str(address) else f"{host} resolves to {reason}"
    raise TargetRefused(f"refused by the SSRF guard: {where}")


async def _getaddrinfo(host: str) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _parse(url: str) -> yarl.URL:
    try:
        return yarl.URL(url)
    except (ValueError, TypeError) as exc:  # UnicodeError (bad IDNA) is a ValueError
        if "port" in str(exc).lower():
            raise TargetRejected("port must be a number from 1 to 65535") from None
        raise TargetRejected("is not a valid URL") from None


def _check_host(raw_host: str) -> None:
    if ":" in raw_host:  # yarl has already validated the IPv6 literal itself
        if "%" in raw_host:
            raise TargetRejected("must not contain an IPv6 zone id (%...)")
        return
    literal = literal_address(raw_host)
    if literal is not None:
        if raw_host != str(literal):
            # aiohttp refuses most of these spellings at connect time, and they are the classic
            # way around naive SSRF filters; no integrator needs them.
            raise TargetRejected(
                f"host {raw_host} is a non-standard way of writing the IP address {literal};"
                f" write {literal}"
            )
        return
    name = raw_host.removesuffix(".")
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise TargetRejected(f"host {raw_host} is not a valid host name")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        # WHATWG URL: a host ending in a number is an IPv4 address, and this one is not valid.
        raise TargetRejected(f"host {raw_host} is not a valid IP address")


def _inet_aton(text: str) -> int | None:
    """The 32-bit value glibc's inet_aton() gives `text`, or None where it would refuse it."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        value = _inet_aton_part(part)
        if value is None:
            return None
        values.append(value)
    *leading, final = values
    if any(value > 0xFF for value in leading) or final >= 1 << (8 * (5 - len(values))):
        return None
    result = final
    for index, value in enumerate(leading):
        result |= value << (8 * (3 - index))
    return result


def _inet_aton_part(part: str) -> int | None:
    if not part or part[0] not in _DECIMAL_DIGITS or part == "0x":
        return None
    if part.startswith("0x"):
        digits, allowed, base = part[2:].lstrip("0"), _HEX_DIGITS, 16
    elif part.startswith("0"):
        digits, allowed, base = part.lstrip("0"), _OCTAL_DIGITS, 8
    else:
        digits, allowed, base = part, _DECIMAL_DIGITS, 10
    if not set(digits) <= allowed:
        return None
    if len(digits) > 12:  # larger than any part can be; also keeps int() away from huge inputs
        return None
    return int(digits, base) if digits else 0


def _ipv4_reason(address: ipaddress.IPv4Address) -> str | None:
    for network, template in _IPV4_RULES:
        if address in network:
            return template.format(address)
    return _property_reason(address)


def _property_reason(address: IPAddress) -> str | None:
    # The backstop for whatever the tables above do not name.
    if address.is_multicast:
        return f"multicast address {address}"
    if address.is_unspecified:
        return f"unspecified address {address}"
    if address.is_loopback:
        return f"loopback address {address}"
    if address.is_link_local:
        return f"link-local address {address}"
    if address.is_reserved:
        return f"reserved address {address}"
    if address.is_private or not address.is_global:
        return f"non-public address {address}"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    found: list[tuple[str, ipaddress.IPv4Address]] = []
    if address.ipv4_mapped is not None:
        found.append(("IPv4-mapped IPv6", address.ipv4_mapped))
    elif address in _NAT64_WELL_KNOWN:
        found.append(("NAT64", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)))
    elif address.sixtofour is not None:
        found.append(("6to4", address.sixtofour))
    elif address.teredo is not None:
        server, client = address.teredo
        found.extend([("Teredo", client), ("Teredo", server)])
    elif address in _IPV4_COMPATIBLE and int(address) > 1:
        found.append(("IPv4-compatible IPv6", ipaddress.IPv4Address(int(address))))
    return found


def _translates_to_ipv4(address: ipaddress.IPv6Address) -> bool:
    # Forms that really deliver to the embedded IPv4 address, so a public one is fine. Teredo
    # and the deprecated IPv4-compatible form fall through to the IPv6 rules and are refused.
    return (
        address.ipv4_mapped is not None
        or address in _NAT64_WELL_KNOWN
        or address.sixtofour is not None
    )
