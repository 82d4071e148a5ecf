"""The outbound address policy (patchbay.activate.targets): every spelling of a refused
address is refused, allowed_targets narrows the rest, credentials never go over plain http
to a host not known to be loopback or allow-listed, and URLs are shown masked."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patchbay.activate.targets import (
    METADATA_NAMES,
    TargetError,
    TargetPolicy,
    mask_url,
    parse_address,
    refused_reason,
)

DEFAULT = TargetPolicy()

REFUSED_V4 = [
    ipaddress.ip_network(n)
    for n in ("169.254.0.0/16", "0.0.0.0/8", "224.0.0.0/4", "255.255.255.255/32")
]
REFUSED_V6 = [ipaddress.ip_network(n) for n in ("fe80::/10", "ff00::/8", "::/128")]
METADATA_V4 = [ipaddress.IPv4Address(a) for a in ("169.254.169.254", "100.100.100.200")]


def v4_in(network: ipaddress.IPv4Network) -> st.SearchStrategy[ipaddress.IPv4Address]:
    first = int(network.network_address)
    return st.integers(first, first + network.num_addresses - 1).map(ipaddress.IPv4Address)


def v6_in(network: ipaddress.IPv6Network) -> st.SearchStrategy[ipaddress.IPv6Address]:
    first = int(network.network_address)
    return st.integers(first, first + network.num_addresses - 1).map(ipaddress.IPv6Address)


refused_v4 = st.one_of(
    *(v4_in(n) for n in REFUSED_V4 if isinstance(n, ipaddress.IPv4Network)),
    st.sampled_from(METADATA_V4),
)
refused_v6 = st.one_of(
    *(v6_in(n) for n in REFUSED_V6 if isinstance(n, ipaddress.IPv6Network)),
    st.just(ipaddress.IPv6Address("fd00:ec2::254")),
)
#: Addresses neither refused nor loopback nor private (a public partner).
public_v4 = (
    st.integers(0, 2**32 - 1)
    .map(ipaddress.IPv4Address)
    .filter(lambda a: refused_reason(a) is None and a.is_global)
)


def _part(value: int, style: str) -> str:
    if style == "hex":
        return hex(value)
    if style == "HEX":
        return "0X" + format(value, "X")
    if style == "oct":
        return "0" + format(value, "o")
    return str(value)


@st.composite
def spellings(draw: st.DrawFn, address: ipaddress.IPv4Address) -> str:
    """``address`` written in one of the forms the C resolver reads as it."""
    number = int(address)
    octets = list(address.packed)
    parts = draw(st.sampled_from([1, 2, 3, 4]))
    style = st.sampled_from(["dec", "hex", "HEX", "oct"])
    if parts == 1:
        values = [number]
    elif parts == 2:
        values = [octets[0], number & 0xFFFFFF]
    elif parts == 3:
        values = [octets[0], octets[1], number & 0xFFFF]
    else:
        values = octets
    return ".".join(_part(v, draw(style)) for v in values)


@st.composite
def refused_hosts(draw: st.DrawFn) -> str:
    """A URL host that stands for a refused address, in any spelling."""
    kind = draw(st.sampled_from(["v4", "mapped", "mapped-hex", "nat64", "6to4", "v6"]))
    if kind == "v6":
        return f"[{draw(refused_v6)}]"
    address = draw(refused_v4)
    if kind == "v4":
        return draw(spellings(address))
    if kind == "mapped":
        return f"[::ffff:{address}]"
    if kind == "mapped-hex":
        return f"[{ipaddress.IPv6Address(0xFFFF << 32 | int(address)).exploded}]"
    if kind == "nat64":
        return f"[{ipaddress.IPv6Address((0x64FF9B << 96) | int(address))}]"
    return f"[{ipaddress.IPv6Address((0x2002 << 112) | (int(address) << 80) | 1)}]"


@given(refused_v4.flatmap(lambda a: st.tuples(st.just(a), spellings(a))))
def test_every_ipv4_spelling_reads_as_the_c_resolver_reads_it(
    pair: tuple[ipaddress.IPv4Address, str],
) -> None:
    address, text = pair
    assert parse_address(text) == address
    assert socket.inet_aton(text) == address.packed  # the C library agrees


@given(refused_hosts(), st.sampled_from(["http", "https", "HTTP"]), st.booleans())
def test_refused_addresses_are_refused_in_every_spelling(
    host: str, scheme: str, restricted: bool
) -> None:
    policy = TargetPolicy.from_setting(["0.0.0.0/0", "::/0"]) if restricted else DEFAULT
    with pytest.raises(TargetError, match="never sends there"):
        policy.check_url(f"{scheme}://{host}:8080/firehose")


@given(refused_v4)
def test_refused_addresses_are_refused_when_a_name_resolves_to_them(
    address: ipaddress.IPv4Address,
) -> None:
    for resolved in (str(address), f"::ffff:{address}"):
        with pytest.raises(TargetError, match="never sends there"):
            DEFAULT.check_connect(
                "https://partner.example/x", "partner.example", resolved, credentials=False
            )


@given(public_v4.flatmap(lambda a: st.tuples(st.just(a), spellings(a))))
def test_other_addresses_are_taken_unless_allowed_targets_leaves_them_out(
    pair: tuple[ipaddress.IPv4Address, str],
) -> None:
    address, text = pair
    DEFAULT.check_url(f"https://{text}/x")
    DEFAULT.check_connect("https://h/x", "h", str(address), credentials=True)
    TargetPolicy.from_setting([f"{address}/32"]).check_url(f"https://{text}/x")
    other = ipaddress.IPv4Address(int(address) ^ 1)
    with pytest.raises(TargetError, match="not in allowed_targets"):
        TargetPolicy.from_setting([f"{other}/32"]).check_url(f"https://{text}/x")


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://0xa9fea9fe/",
        "http://2852039166/",
        "http://0251.0376.0251.0376/",
        "http://169.254.43518/",
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://[fd00:ec2::254]/",
        "http://100.100.100.200/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://METADATA.GOOGLE.INTERNAL./",
        "http://[fe80::1%25eth0]:8080/",
        "http://0.0.0.0:8080/",
        "http://0/",
        "http://[::]/",
        "http://224.0.0.1/",
        "http://[ff02::1]/",
    ],
)
def test_known_forms_are_refused(url: str) -> None:
    with pytest.raises(TargetError, match="never sends there"):
        DEFAULT.check_url(url)


@pytest.mark.parametrize("url", ["ftp://partner.example/", "file:///etc/passwd", "http:///x", "x"])
def test_only_http_urls_are_taken(url: str) -> None:
    with pytest.raises(TargetError, match="not an http"):
        DEFAULT.check_url(url)


def test_loopback_is_taken_by_default_and_must_be_listed_once_restricted() -> None:
    for url in ("http://127.0.0.1:9/x", "http://0x7f000001/", "http://[::1]/", "http://127.1/"):
        DEFAULT.check_url(url, credentials=True)
    DEFAULT.check_connect("http://localhost/", "localhost", "::1", credentials=True)
    restricted = TargetPolicy.from_setting(["partner.example"])
    with pytest.raises(TargetError, match="not in allowed_targets"):
        restricted.check_url("http://127.0.0.1:9/x")
    with pytest.raises(TargetError, match="not in allowed_targets"):
        restricted.check_url("https://other.example/x")
    restricted.check_url("https://partner.example/x")
    with pytest.raises(TargetError, match="not in allowed_targets"):
        restricted.check_connect("https://x.example/", "x.example", "10.0.0.1", credentials=False)
    TargetPolicy.from_setting(["127.0.0.0/8"]).check_url("http://127.0.0.1:9/x")
    with pytest.raises(TargetError, match="not in allowed_targets"):
        TargetPolicy.from_setting([]).check_url("http://127.0.0.1:9/x")


def test_host_names_in_allowed_targets_match_exactly_or_below_a_leading_dot() -> None:
    policy = TargetPolicy.from_setting([".hooks.example", "*.api.example", "Partner.Example."])
    for host in ("a.hooks.example", "b.c.api.example", "partner.example"):
        policy.check_connect(f"https://{host}/", host, "203.0.113.5", credentials=True)
    for host in ("hooks.example", "evilhooks.example", "api.example.evil"):
        with pytest.raises(TargetError, match="not in allowed_targets"):
            policy.check_connect(f"https://{host}/", host, "203.0.113.5", credentials=False)
    # a listed name still never reaches a refused address
    with pytest.raises(TargetError, match="never sends there"):
        policy.check_connect(
            "https://partner.example/", "partner.example", "169.254.169.254", credentials=False
        )


def test_credentials_go_over_plain_http_only_to_loopback_or_listed_hosts() -> None:
    with pytest.raises(TargetError, match="plain http"):
        DEFAULT.check_url("http://partner.example/x", credentials=True)
    with pytest.raises(TargetError, match="plain http"):
        DEFAULT.check_url("http://user:pw@203.0.113.5/x")
    with pytest.raises(TargetError, match="plain http"):
        DEFAULT.check_connect("http://p.example/", "p.example", "10.1.2.3", credentials=True)
    DEFAULT.check_url("https://partner.example/x", credentials=True)
    DEFAULT.check_url("http://partner.example/x", credentials=False)
    DEFAULT.check_url("http://localhost:8080/x", credentials=True)
    DEFAULT.check_connect("http://localhost/", "localhost", "127.0.0.1", credentials=True)
    listed = TargetPolicy.from_setting(["partner.example", "10.0.0.0/8"])
    listed.check_url("http://partner.example/x", credentials=True)
    listed.check_connect("http://p.internal/", "p.internal", "10.1.2.3", credentials=True)
    try:
        DEFAULT.check_url("http://user:hunter2@partner.example/x")
    except TargetError as exc:
        assert "hunter2" not in str(exc)


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("169.254.0.0/16", "link-local"),
        ("169.254.169.254", "metadata"),
        ("fe80::/64", "link-local"),
        ("metadata.google.internal", "metadata"),
        ("10.0.0.0/33", "not a CIDR"),
        ("partner.example:443", "not a CIDR"),
        ("bad host", "neither a CIDR nor a host name"),
    ],
)
def test_wrong_allowed_targets_entries_are_refused(entry: str, problem: str) -> None:
    with pytest.raises(TargetError, match=problem):
        TargetPolicy.from_setting([entry])


def test_metadata_names_are_refused_by_name() -> None:
    for name in METADATA_NAMES:
        with pytest.raises(TargetError, match="metadata"):
            DEFAULT.check_url(f"http://{name}/")


secret_text = st.text("ABCDEFGHJKLMNPQRSTUVWXYZ23456789", min_size=8, max_size=20)


@given(
    user=st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8),
    password=secret_text,
    token=secret_text,
    key=st.sampled_from(["token", "access_token", "api_key", "apiKey", "secret", "sig", "auth"]),
)
def test_masked_urls_never_show_passwords_or_tokens(
    user: str, password: str, token: str, key: str
) -> None:
    url = f"https://{user}:{password}@partner.example:8443/hook?x=1&{key}={token}#f"
    shown = mask_url(url)
    assert password not in shown and token not in shown
    assert shown.startswith(f"https://{user}:***@partner.example:8443/hook?x=1&{key}=***")


def test_masking_leaves_plain_urls_alone() -> None:
    for url in ("https://partner.example/x?page=2", "http://127.0.0.1:9/firehose"):
        assert mask_url(url) == url
    assert mask_url("https://user:pass@host/p?token=abc") == "https://user:***@host/p?token=***"
    assert mask_url("https://user@host/") == "https://user@host/"
