"""Which network addresses outputs and modules may be sent to, and how URLs are shown.

Pure functions and one frozen policy object, no I/O: the transport
(:mod:`patchbay.partner.transport`) asks the policy about every address it is about to
connect to, after resolving the host name (its resolver hook), and the commands ask it about
URLs when outputs and modules are added.

The rules (:class:`TargetPolicy`):

* **Always refused**, whatever the settings: link-local addresses (``169.254.0.0/16``,
  ``fe80::/10``), the cloud metadata services (``169.254.169.254``, ``fd00:ec2::254``,
  ``100.100.100.200``, ``192.0.0.192``, and names such as ``metadata.google.internal``),
  unspecified addresses (``0.0.0.0/8``, ``::``), multicast (``224.0.0.0/4``, ``ff00::/8``)
  and the broadcast address. An IPv6 address that carries an IPv4 one (IPv4-mapped,
  IPv4-compatible, NAT64, 6to4, Teredo) is refused when the IPv4 one is.
* **allowed_targets** (a list of CIDRs and host names), when set, narrows the rest: an
  address is taken only when it lies in one of the CIDRs or its URL names one of the hosts
  (``.example.com`` or ``*.example.com``: any name under ``example.com``). Unset, every other
  address is taken, loopback included (a partner on the same host).
* **Credentials over plain http** (a token, or a user and password in the URL) go only to
  loopback or to an allow-listed host; use https for anything else.

Host names are read the way the C resolver reads them: ``2130706433``, ``0x7f000001``,
``0177.0.0.1`` and ``127.1`` are all ``127.0.0.1`` (:func:`parse_address`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from patchbay.errors import PatchbayError
from patchbay.partner.targets import mask_url

__all__ = [
    "ALWAYS_REFUSED",
    "METADATA_ADDRESSES",
    "METADATA_NAMES",
    "Address",
    "Network",
    "TargetError",
    "TargetPolicy",
    "mask_url",
    "parse_address",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_net = ipaddress.ip_network

#: Cloud metadata services (AWS, GCP, Azure, OCI...: 169.254.169.254; AWS over IPv6;
#: Alibaba Cloud; Oracle Cloud Classic).
METADATA_ADDRESSES: Final[frozenset[Address]] = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)

#: Names of metadata services (compared without case and trailing dot).
METADATA_NAMES: Final[frozenset[str]] = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
    }
)

#: Networks never connected to, and why.
ALWAYS_REFUSED: Final[tuple[tuple[Network, str], ...]] = (
    (_net("169.254.0.0/16"), "a link-local address"),
    (_net("fe80::/10"), "a link-local address"),
    (_net("0.0.0.0/8"), "an unspecified address"),
    (_net("::/128"), "an unspecified address"),
    (_net("224.0.0.0/4"), "a multicast address"),
    (_net("ff00::/8"), "a multicast address"),
    (_net("255.255.255.255/32"), "the broadcast address"),
)

_NAT64: Final = _net("64:ff9b::/96")
_COMPATIBLE: Final = _net("::/96")
_LABEL: Final = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_IPV4_PART: Final = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")
#: Query parameters whose values are masked when a URL is shown.


class TargetError(PatchbayError):
    """A URL or an address that outputs and modules may not send to; the message says why
    and what to do (URLs in it are masked)."""


# --------------------------------------------------------------------------- parsing


def _legacy_ipv4(text: str) -> ipaddress.IPv4Address | None:
    """``text`` read as the C library's ``inet_aton`` reads it (1 to 4 parts, each
    decimal, ``0x`` hex or ``0`` octal; the last one fills the remaining bytes)."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_IPV4_PART.fullmatch(p) for p in parts):
        return None
    values = []
    for part in parts:
        if part[:2].lower() == "0x":
            values.append(int(part[2:] or "0", 16))
        elif part.startswith("0"):
            values.append(int(part, 8))
        else:
            values.append(int(part))
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = last
    for index, value in enumerate(head):
        number |= value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def parse_address(host: str) -> Address | None:
    """The address ``host`` (a URL's host, with or without brackets) stands for, or ``None``
    when it is a name. Zone ids (``fe80::1%eth0``) are dropped; IPv4 is read in every form
    the C resolver takes (decimal, hex, octal, fewer than four parts)."""
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.removesuffix(".") if ":" not in text else text
    if ":" in text:
        text = text.split("%", 1)[0]
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            return None
    return _legacy_ipv4(text)


def _embedded_ipv4(address: Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 one carries (and reaches, on some networks)."""
    if isinstance(address, ipaddress.IPv4Address):
        return []
    found = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in _NAT64 or (address in _COMPATIBLE and int(address) > 1):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _views(address: Address) -> list[Address]:
    """The address and the IPv4 addresses it carries."""
    return [address, *_embedded_ipv4(address)]


def _normal_name(host: str) -> str:
    return host.strip().lower().rstrip(".")


def _is_host_name(name: str) -> bool:
    labels = name.split(".")
    return 0 < len(name) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def refused_reason(address: Address) -> str | None:
    """Why ``address`` is never connected to, or ``None`` when it may be."""
    for view in _views(address):
        if view in METADATA_ADDRESSES:
            return "a cloud metadata address"
        for network, why in ALWAYS_REFUSED:
            if view.version == network.version and view in network:
                return why
    return None


def is_loopback(address: Address) -> bool:
    """``127.0.0.0/8``, ``::1`` or an IPv4-mapped loopback address."""
    return any(view.is_loopback for view in _views(address))


# --------------------------------------------------------------------------- showing URLs


def has_userinfo(url: str) -> bool:
    """Whether ``url`` carries a user (and maybe a password): aiohttp sends it as basic
    authentication."""
    try:
        return "@" in urlsplit(url).netloc
    except ValueError:
        return False


# --------------------------------------------------------------------------- the policy


def _parse_entry(entry: str) -> Network | str:
    text = entry.strip()
    if "/" in text or parse_address(text) is not None or ":" in text:
        address = parse_address(text.split("/", 1)[0])
        try:
            if address is not None and "/" not in text:
                return ipaddress.ip_network(address)
            return ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise TargetError(f"allowed_targets: {entry!r} is not a CIDR") from None
    name = _normal_name(text)
    bare = name.removeprefix("*.").removeprefix(".")
    if not _is_host_name(bare):
        raise TargetError(f"allowed_targets: {entry!r} is neither a CIDR nor a host name")
    return name if name == bare else "." + bare


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    """Where outputs and modules may send (see the module doc). ``networks`` and ``names``
    are ``allowed_targets``; ``restricted`` is whether that setting was given at all (an
    empty list allows nothing)."""

    networks: tuple[Network, ...] = ()
    names: frozenset[str] = frozenset()
    restricted: bool = False

    @classmethod
    def from_setting(cls, entries: Sequence[str] | None) -> TargetPolicy:
        """The policy of an ``allowed_targets`` value (``None``: not set). Raises
        :class:`TargetError` naming an entry that is neither a CIDR nor a host name, or that
        only covers addresses that are always refused."""
        if entries is None:
            return cls()
        networks: list[Network] = []
        names: set[str] = set()
        for entry in entries:
            if not entry.strip():
                continue
            parsed = _parse_entry(entry)
            if isinstance(parsed, str):
                if parsed.lstrip(".") in METADATA_NAMES:
                    raise TargetError(
                        f"allowed_targets: {entry!r} is a cloud metadata service, always refused"
                    )
                names.add(parsed)
                continue
            if parsed.num_addresses == 1 and parsed.network_address in METADATA_ADDRESSES:
                raise TargetError(
                    f"allowed_targets: {entry!r} is a cloud metadata address, always refused"
                )
            for refused, why in ALWAYS_REFUSED:
                if parsed.version == refused.version and parsed.subnet_of(refused):  # type: ignore[arg-type]
                    raise TargetError(f"allowed_targets: {entry!r} is {why}, always refused")
            networks.append(parsed)
        return cls(tuple(networks), frozenset(names), restricted=True)

    # -- matching ---------------------------------------------------------------------

    def _name_listed(self, host: str) -> bool:
        name = _normal_name(host)
        if name in self.names:
            return True
        return any(
            entry.startswith(".") and name.endswith(entry) and len(name) > len(entry)
            for entry in self.names
        )

    def _address_listed(self, address: Address) -> bool:
        return any(
            view.version == network.version and view in network
            for view in _views(address)
            for network in self.networks
        )

    def _describe_allowed(self) -> str:
        shown = [str(n) for n in self.networks] + sorted(self.names)
        return ", ".join(shown) if shown else "nothing"

    # -- checks -----------------------------------------------------------------------

    def check_url(self, url: str, *, credentials: bool = False) -> None:
        """Refuse ``url`` (:class:`TargetError`) when it is not http(s), names a metadata
        service, is a literal address that may not be connected to, is a name not listed in
        ``allowed_targets`` when only names are listed, or would carry ``credentials`` (or a
        user in the URL) over plain http to a host not known to be loopback or allow-listed.
        A host name is otherwise taken here; the addresses it resolves to are checked by
        :meth:`check_connect` when connecting."""
        shown = mask_url(url)
        try:
            parts = urlsplit(url.strip())
            host = parts.hostname
        except ValueError as exc:
            raise TargetError(f"not a valid URL: {shown} ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not host:
            raise TargetError(f"not an http(s) URL: {shown}")
        credentials = credentials or has_userinfo(url)
        name = _normal_name(host)
        if name in METADATA_NAMES:
            raise TargetError(
                f"refused {shown}: {host} is a cloud metadata service; Patchbay never sends there"
            )
        address = parse_address(host)
        if address is not None:
            self._check(shown, scheme, host, address, credentials)
            return
        listed = self._name_listed(name)
        if self.restricted and not self.networks and not listed:
            raise TargetError(
                f"refused {shown}: {host} is not in allowed_targets ({self._describe_allowed()});"
                " add it to allowed_targets (PATCHBAY_ALLOWED_TARGETS) to send there"
            )
        local = name == "localhost" or name.endswith(".localhost")
        if scheme == "http" and credentials and not (listed or local):
            raise TargetError(_plain_http(shown, host))

    def check_connect(self, url: str, host: str, address: str, *, credentials: bool) -> None:
        """Refuse (:class:`TargetError`) connecting to ``address`` (what ``host``, the host
        of ``url``, resolved to) for a request with or without ``credentials``."""
        shown = mask_url(url)
        parsed = parse_address(address)
        if parsed is None:
            raise TargetError(f"refused {shown}: {host} resolved to {address!r}, not an address")
        try:
            scheme = urlsplit(url).scheme.lower()
        except ValueError:
            scheme = ""
        self._check(shown, scheme, host, parsed, credentials or has_userinfo(url))

    def _check(
        self, shown: str, scheme: str, host: str, address: Address, credentials: bool
    ) -> None:
        where = host if _same(host, address) else f"{host} ({address})"
        why = refused_reason(address)
        if why is not None:
            raise TargetError(f"refused {shown}: {where} is {why}; Patchbay never sends there")
        listed = self._address_listed(address) or self._name_listed(host)
        if self.restricted and not listed:
            raise TargetError(
                f"refused {shown}: {where} is not in allowed_targets"
                f" ({self._describe_allowed()}); add it to allowed_targets"
                " (PATCHBAY_ALLOWED_TARGETS) to send there"
            )
        if scheme == "http" and credentials and not (is_loopback(address) or listed):
            raise TargetError(_plain_http(shown, where))


def _same(host: str, address: Address) -> bool:
    return host.strip("[]").split("%", 1)[0].lower() == str(address)


def _plain_http(shown: str, where: str) -> str:
    return (
        f"refused {shown}: credentials (a token or a password) would travel over plain http"
        f" to {where}; use https,"
        " or list the host in allowed_targets (PATCHBAY_ALLOWED_TARGETS) if the network"
        " to it is trusted (loopback is always trusted)"
    )
