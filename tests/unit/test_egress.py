"""The SSRF guard and URL rules: registration checks, every address spelling, the guarded connector.

Nothing here contacts an address outside loopback: host names go through fake resolvers, public
addresses are only vetted, and the connector tests talk to a server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ipaddress
import platform
import socket
from collections.abc import AsyncIterator
from typing import cast

import aiohttp
import pytest
import yarl
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from service.egress import (
    MAX_URL_LENGTH,
    GuardedResolver,
    check_literal_target,
    check_url,
    forbidden_reason,
    literal_address,
    make_connector,
    vet_url,
)
from service.errors import TargetRefused, TargetRejected
from tests.support.dns import FakeResolver, fake_dns

# --- static URL rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/webhooks",
        "https://example.com",
        "https://EXAMPLE.com./hooks?team=a&x=1",
        "https://hooks.example.com:8443/path/with%20space",
        "https://bücher.example/hook",
        "https://93.184.216.34/hook",
        "https://[2606:4700::1111]/hook",
        "https://under_score.example.com/",
        "https://example.com/" + "a" * (MAX_URL_LENGTH - len("https://example.com/")),
    ],
)
def test_good_urls_are_returned_unchanged(url: str) -> None:
    assert check_url(url, allow_private=False) == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://example.com/", "must use https"),
        ("ftp://example.com/", "must use https"),
        ("javascript:alert(1)", "must use https"),
        ("example.com/hook", "must be an absolute URL"),
        ("/hook", "must be an absolute URL"),
        ("//example.com/hook", "must be an absolute URL"),
        ("https:///hook", "must include a host name"),
        ("https://user:pass@example.com/", "must not contain user-info"),
        ("https://user@example.com/", "must not contain user-info"),
        ("https://:pass@example.com/", "must not contain user-info"),
        ("https://@example.com/", "must not contain user-info"),
        ("https://example.com/" + "a" * MAX_URL_LENGTH, "at most 2048 characters"),
        ("https://example.com/#top", "must not contain a fragment"),
        ("https://example.com/#", "must not contain a fragment"),
        ("https://example.com:0/", "port must be a number from 1 to 65535"),
        ("https://example.com:65536/", "port must be a number from 1 to 65535"),
        ("https://example.com:http/", "port must be a number from 1 to 65535"),
        (" https://example.com/", "must not contain spaces or control characters"),
        ("https://example.com/\thook", "must not contain spaces or control characters"),
        ("https://exa\nmple.com/", "must not contain spaces or control characters"),
        ("https://exa mple.com/", "must not contain spaces or control characters"),
        ("https://example.com\\@evil.com/", "is not a valid URL"),
        ("https://[::1/", "is not a valid URL"),
        ("https://-bad.example.com/", "is not a valid host name"),
        ("https://bad..example.com/", "is not a valid host name"),
        ("https://%65xample.com/", "is not a valid host name"),
        ("https://" + "a" * 64 + ".com/", "is not a valid host name"),
        ("https://1.2.3.4.5/", "is not a valid IP address"),
        ("https://4294967296/", "is not a valid IP address"),
        ("https://08.0.0.1/", "is not a valid IP address"),
        ("https://[fe80::1%25eth0]/", "must not contain an IPv6 zone id"),
        ("https://0x5db8d822/", "non-standard way of writing the IP address 93.184.216.34"),
        ("https://93.184.216.34./", "non-standard way of writing the IP address 93.184.216.34"),
    ],
)
def test_bad_urls_are_rejected_with_a_readable_reason(url: str, reason: str) -> None:
    with pytest.raises(TargetRejected) as caught:
        check_url(url, allow_private=False)
    assert reason in caught.value.reason
    assert str(caught.value) == caught.value.reason


def test_a_url_must_be_a_string() -> None:
    with pytest.raises(TargetRejected, match="must be a string"):
        check_url(cast(str, 42), allow_private=False)


def test_allow_private_allows_http_but_keeps_the_other_rules() -> None:
    assert check_url("http://localhost:8080/hook", allow_private=True) == (
        "http://localhost:8080/hook"
    )
    with pytest.raises(TargetRejected, match="must use http or https"):
        check_url("ftp://localhost/", allow_private=True)
    with pytest.raises(TargetRejected, match="user-info"):
        check_url("http://a:b@localhost/", allow_private=True)
    with pytest.raises(TargetRejected, match="2048"):
        check_url("http://localhost/" + "a" * MAX_URL_LENGTH, allow_private=True)


# --- literal addresses in every spelling --------------------------------------------------------

LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "2130706433",
    "0x7f000001",
    "0X7F000001",
    "0x7f.0.0.1",
    "0x7f.0x0.0x0.0x1",
    "0177.0.0.1",
    "00000177.0.0.01",
    "017700000001",
    "127.1",
    "127.0.1",
    "127.0.0.1.",
    "%31%32%37.0.0.1",
    "\uff11\uff12\uff17.\uff10.\uff10.\uff11",  # full-width digits (IDNA maps them)
    "127\u30020\u30020\u30021",  # ideographic full stops
]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_every_ipv4_spelling_of_loopback_is_recognised(host: str) -> None:
    assert literal_address(host) == ipaddress.IPv4Address("127.0.0.1")


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("[::ffff:7f00:1]", "::ffff:7f00:1"),
        ("fe80::1%eth0", "fe80::1"),
        ("[fe80::1%25eth0]", "fe80::1"),
        ("93.184.216.34", "93.184.216.34"),
        ("0xc0.0xa8.1", "192.168.0.1"),
        ("0300.0250.0.1", "192.168.0.1"),
        ("3232235521", "192.168.0.1"),
        ("0", "0.0.0.0"),
    ],
)
def test_other_literals_are_recognised(host: str, address: str) -> None:
    assert literal_address(host) == ipaddress.ip_address(address)


@pytest.mark.parametrize(
    "host",
    ["example.com", "", "1.2.3.4.5", "4294967296", "0x", "08.0.0.1", "1..1", "[::1", "::g", "x"],
)
def test_names_and_invalid_numbers_are_not_literals(host: str) -> None:
    assert literal_address(host) is None


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="compares with glibc's inet_aton")
@given(st.text(alphabet="0123456789abcdefxX.", min_size=1, max_size=20))
def test_literal_address_agrees_with_inet_aton(host: str) -> None:
    try:
        expected = ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        # One trailing dot is the only thing we read as numeric that inet_aton does not.
        assert literal_address(host) is None or host.endswith(".")
    else:
        assert literal_address(host) == expected


@given(st.text())
def test_literal_address_never_raises(host: str) -> None:
    literal_address(host)


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_forbidden_reason_never_raises_for_ipv4(value: int) -> None:
    reason = forbidden_reason(ipaddress.IPv4Address(value))
    assert reason is None or str(ipaddress.IPv4Address(value)) in reason


@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_forbidden_reason_never_raises_for_ipv6(value: int) -> None:
    reason = forbidden_reason(ipaddress.IPv6Address(value))
    assert reason is None or isinstance(reason, str)


# --- which addresses are forbidden --------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback address 127.0.0.1"),
        ("127.255.0.9", "loopback"),
        ("10.1.2.3", "private address 10.1.2.3"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "cloud metadata service"),
        ("169.254.1.1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "'this network'"),
        ("255.255.255.255", "broadcast"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("198.18.0.1", "benchmarking"),
        ("198.19.255.1", "benchmarking"),
        ("192.0.2.10", "documentation"),
        ("198.51.100.10", "documentation"),
        ("203.0.113.10", "documentation"),
        ("192.0.0.8", "IETF protocol"),
        ("::1", "loopback address ::1"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fc00::1", "unique-local"),
        ("fd12:3456::1", "unique-local"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "documentation"),
        ("::ffff:127.0.0.1", "IPv4-mapped IPv6 address ::ffff:7f00:1 embeds loopback"),
        ("::ffff:169.254.169.254", "cloud metadata service"),
        ("::ffff:10.0.0.1", "embeds private"),
        ("::127.0.0.1", "IPv4-compatible IPv6 address ::7f00:1 embeds loopback"),
        ("64:ff9b::127.0.0.1", "NAT64 address 64:ff9b::7f00:1 embeds loopback"),
        ("64:ff9b::a9fe:a9fe", "cloud metadata service"),
        ("64:ff9b:1::7f00:1", "local-use NAT64"),
        ("2002:7f00:1::", "6to4 address 2002:7f00:1:: embeds loopback"),
        ("2002:c0a8:101::1", "embeds private address 192.168.1.1"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo"),
        ("::93.184.216.34", "reserved"),
    ],
)
def test_forbidden_addresses(address: str, reason: str) -> None:
    found = forbidden_reason(ipaddress.ip_address(address))
    assert found is not None
    assert reason in found


@pytest.mark.parametrize(
    "address",
    [
        "93.184.216.34",
        "1.1.1.1",
        "8.8.8.8",
        "100.63.255.255",
        "100.128.0.0",
        "172.32.0.1",
        "2606:4700::1111",
        "2a00:1450:4001:80b::200e",
        "::ffff:93.184.216.34",
        "64:ff9b::5db8:d822",
        "2002:5db8:d822::1",
    ],
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is None


def test_a_zone_id_does_not_hide_a_link_local_address() -> None:
    assert forbidden_reason(ipaddress.IPv6Address("fe80::1%eth0")) == "link-local address fe80::1"


# --- registration: vet_url ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        *LOOPBACK_SPELLINGS[:12],
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[::127.0.0.1]",
        "[64:ff9b::7f00:1]",
        "[2002:7f00:1::]",
        "169.254.169.254",
        "100.64.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "[fc00::1]",
        "[fe80::1]",
        "[fe80::1%25eth0]",
    ],
)
async def test_registration_refuses_forbidden_literal_hosts(host: str) -> None:
    never = fake_dns({})
    with pytest.raises(TargetRejected):
        await vet_url(f"https://{host}/hook", allow_private=False, resolver=never)


async def test_a_forbidden_literal_is_named_in_the_reason() -> None:
    with pytest.raises(TargetRejected, match=r"cloud metadata service"):
        await vet_url("https://169.254.169.254/latest/meta-data", allow_private=False)


@pytest.mark.parametrize("host", ["93.184.216.34", "[2606:4700::1111]", "[::ffff:93.184.216.34]"])
async def test_registration_accepts_public_literal_hosts_without_a_lookup(host: str) -> None:
    async def no_lookup(name: str) -> list[str]:
        raise AssertionError(f"looked up {name}")

    url = f"https://{host}/hook"
    assert await vet_url(url, allow_private=False, resolver=no_lookup) == url


async def test_a_name_that_resolves_to_public_addresses_is_accepted() -> None:
    dns = fake_dns({"hooks.example.com": ["93.184.216.34", "2606:4700::1111"]})
    url = "https://hooks.example.com/in"
    assert await vet_url(url, allow_private=False, resolver=dns) == url


@pytest.mark.parametrize(
    ("host", "addresses", "url", "reason"),
    [
        pytest.param(
            "evil.example.com",
            ["127.0.0.1"],
            "https://evil.example.com/",
            r"evil\.example\.com resolves to .*loopback",
            id="loopback",
        ),
        pytest.param(
            "mixed.example.com",
            ["93.184.216.34", "10.0.0.5", "2606:4700::1111"],
            "https://mixed.example.com/",
            r"private address 10\.0\.0\.5",
            id="one-private-among-public",
        ),
        pytest.param(
            "sneaky.example.com",
            ["::ffff:169.254.169.254"],
            "https://sneaky.example.com/",
            "cloud metadata",
            id="mapped-ipv6-metadata",
        ),
        pytest.param(
            "odd.example.com",
            ["not-an-address"],
            "https://odd.example.com/",
            "unreadable address",
            id="unreadable-answer",
        ),
        # The IDN host is looked up in its ASCII form.
        pytest.param(
            "xn--bcher-kva.example",
            ["127.0.0.1"],
            "https://bücher.example/",
            "loopback",
            id="idn-in-ascii",
        ),
    ],
)
async def test_a_name_resolving_to_a_refused_address_is_rejected(
    host: str, addresses: list[str], url: str, reason: str
) -> None:
    dns = fake_dns({host: addresses})
    with pytest.raises(TargetRejected, match=reason):
        await vet_url(url, allow_private=False, resolver=dns)


async def test_a_name_that_does_not_resolve_is_accepted() -> None:
    url = "https://not-yet-in-dns.example.com/hook"
    assert await vet_url(url, allow_private=False, resolver=fake_dns({})) == url


async def test_a_lookup_that_times_out_is_accepted() -> None:
    async def slow(host: str) -> list[str]:
        await asyncio.sleep(10)
        return ["127.0.0.1"]

    url = "https://slow-dns.example.com/hook"
    assert await vet_url(url, allow_private=False, resolver=slow, resolve_timeout=0.01) == url


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST.", "api.localhost"])
async def test_localhost_names_are_rejected_without_a_lookup(host: str) -> None:
    with pytest.raises(TargetRejected, match="local machine"):
        await vet_url(f"https://{host}/", allow_private=False, resolver=fake_dns({}))


async def test_the_default_lookup_uses_the_event_loops_getaddrinfo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[object] = []

    async def getaddrinfo(host: object, port: object, **kwargs: object) -> list[object]:
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.168.7.7", 0))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    with pytest.raises(TargetRejected, match=r"192\.168\.7\.7"):
        await vet_url("https://intranet.example.com/", allow_private=False)
    assert asked == ["intranet.example.com"]


async def test_allow_private_lifts_the_address_checks_and_allows_http() -> None:
    dns = fake_dns({"db.internal.example": ["10.0.0.9"]})
    for url in (
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "https://169.254.169.254/",
        "http://db.internal.example/hook",
    ):
        assert await vet_url(url, allow_private=True, resolver=dns) == url
    with pytest.raises(TargetRejected, match="must use https"):
        await vet_url("http://93.184.216.34/", allow_private=False)


async def test_vet_url_applies_the_static_rules_first() -> None:
    with pytest.raises(TargetRejected, match="user-info"):
        await vet_url("https://u:p@example.com/", allow_private=False, resolver=fake_dns({}))


# --- delivery time: literal targets and the guarded resolver ------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/",
        "http://127.1/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://169.254.169.254/latest/meta-data",
    ],
)
def test_check_literal_target_refuses_forbidden_literals(url: str) -> None:
    with pytest.raises(TargetRejected, match="private or reserved address"):
        check_literal_target(url, allow_private=False)
    with pytest.raises(TargetRejected):
        check_literal_target(yarl.URL(url), allow_private=False)
    check_literal_target(url, allow_private=True)


@pytest.mark.parametrize(
    "url", ["https://example.com/", "https://93.184.216.34/", "https://[2606:4700::1111]/"]
)
def test_check_literal_target_passes_names_and_public_addresses(url: str) -> None:
    check_literal_target(url, allow_private=False)


async def test_guarded_resolver_passes_through_exactly_the_vetted_entries() -> None:
    inner = FakeResolver({"hooks.example.com": ["93.184.216.34", "2606:4700::1111"]})
    guarded = GuardedResolver(inner)
    expected = await inner.resolve("hooks.example.com", 443, socket.AF_UNSPEC)
    assert await guarded.resolve("hooks.example.com", 443, socket.AF_UNSPEC) == expected


@pytest.mark.parametrize(
    "answers", [["127.0.0.1"], ["93.184.216.34", "10.0.0.1"], ["::ffff:169.254.169.254"]]
)
async def test_guarded_resolver_refuses_when_any_answer_is_forbidden(answers: list[str]) -> None:
    guarded = GuardedResolver(FakeResolver({"rebind.example.com": answers}))
    with pytest.raises(TargetRefused, match=r"rebind\.example\.com resolves to") as caught:
        await guarded.resolve("rebind.example.com", 443)
    assert isinstance(caught.value, OSError)
    assert "refused by the SSRF guard" in str(caught.value)


async def test_guarded_resolver_answers_odd_literal_spellings_itself() -> None:
    inner = FakeResolver({})
    guarded = GuardedResolver(inner)
    with pytest.raises(TargetRefused, match="0x7f000001 resolves to loopback"):
        await guarded.resolve("0x7f000001", 80)
    [entry] = await guarded.resolve("0x5db8d822", 443)
    assert entry["host"] == "93.184.216.34"
    assert entry["port"] == 443
    assert inner.asked == []


async def test_guarded_resolver_closes_only_an_inner_resolver_it_created() -> None:
    inner = FakeResolver({})
    await GuardedResolver(inner).close()
    assert not inner.closed


# --- the connector, against a real server on loopback -------------------------------------------


@pytest.fixture
async def local_port() -> AsyncIterator[int]:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: int = runner.addresses[0][1]
    try:
        yield port
    finally:
        await runner.cleanup()


async def test_guarded_connector_refuses_a_name_that_resolves_to_loopback(local_port: int) -> None:
    async with aiohttp.ClientSession(connector=make_connector(allow_private=False, limit=10)) as s:
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await s.get(f"http://localhost:{local_port}/")
    assert isinstance(caught.value.os_error, TargetRefused)
    assert "localhost resolves to loopback address" in str(caught.value)


async def test_guarded_connector_refuses_a_literal_loopback_url(local_port: int) -> None:
    url = f"http://127.0.0.1:{local_port}/"
    with pytest.raises(TargetRejected, match=r"loopback address 127\.0\.0\.1"):
        check_literal_target(url, allow_private=False)
    # aiohttp skips the resolver for literal IPs; the socket factory still refuses them.
    async with aiohttp.ClientSession(connector=make_connector(allow_private=False, limit=10)) as s:
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await s.get(url)
    assert isinstance(caught.value.os_error, TargetRefused)


async def test_guarded_connector_connects_to_the_vetted_address(local_port: int) -> None:
    # The fake resolver says the name is loopback: refused, and never asked twice for the same
    # lookup. With the guard lifted, the very same answer is where the connection goes.
    inner = FakeResolver({"hooks.example.com": ["127.0.0.1"]})
    url = f"http://hooks.example.com:{local_port}/"
    guarded = make_connector(allow_private=False, limit=10, resolver=inner)
    async with aiohttp.ClientSession(connector=guarded) as s:
        with pytest.raises(aiohttp.ClientConnectorError):
            await s.get(url)
    assert inner.asked == ["hooks.example.com"]
    open_connector = make_connector(allow_private=True, limit=10, resolver=inner)
    async with aiohttp.ClientSession(connector=open_connector) as s, s.get(url) as response:
        assert response.status == 200
        assert await response.text() == "hello"
    assert not inner.closed  # handed in, so the caller's to close


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_open_connector_reaches_local_servers(local_port: int, host: str) -> None:
    connector = make_connector(allow_private=True, limit=10)
    assert connector.limit == 10
    assert connector.limit_per_host == 0
    async with (
        aiohttp.ClientSession(connector=connector) as s,
        s.get(f"http://{host}:{local_port}/") as response,
    ):
        assert response.status == 200


def test_target_refused_reads_well_inside_aiohttps_error() -> None:
    error = TargetRefused("refused by the SSRF guard: loopback address 127.0.0.1")
    assert str(error) == "refused by the SSRF guard: loopback address 127.0.0.1"
    assert error.reason == str(error)
    assert isinstance(error, OSError)
