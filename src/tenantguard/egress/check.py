"""Whether an outbound request may go: the URL, then every address its host resolves to. Pure.

Nothing here resolves names or opens sockets: `egress.transport` resolves, asks `check_url`
and `check_addresses`, and connects to exactly the address that was checked.

An address is refused unless it is global after its embedded IPv4 address, if any, is taken
out and checked too: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64
(`64:ff9b::/96`, and the local-use `64:ff9b:1::/48` whole), 6to4 (`2002::/16`) and Teredo
(`2001::/32`) forms report themselves global to `ipaddress` while they lead to the embedded
address. Loopback, private, link-local, CGNAT, multicast, reserved and unspecified addresses are
not global. Cloud metadata addresses are refused by name even where they look global
(Azure's `168.63.129.16`), and cannot be granted.

A tenant's policy may narrow this (hosts allowed, hosts denied: deny wins) and may grant
private endpoints explicitly (`EgressGrant`: a network and ports, for a tenant's own Ollama or
vLLM server), never metadata. Names are compared after IDNA encoding and lower-casing, without
a trailing dot.

Threat stopped: server-side request forgery through every outbound call of the product (fetch
tools, webhooks, model providers, OIDC discovery) — to internal services, the cloud metadata
service, or the gateway itself.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import httpx

from tenantguard.errors import TenantGuardError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

RULES = (
    "scheme",  # not http or https
    "port",  # not an allowed port, nor a granted one
    "userinfo",  # credentials in the URL
    "host_invalid",  # no host, or one that is not a name or an address
    "host_denied",  # on the tenant's deny list, or a metadata name
    "host_not_allowed",  # the tenant allows a list of hosts and this is not on it
    "resolution_failed",  # the name does not resolve
    "metadata_address",  # a cloud metadata address, whatever grants say
    "private_address",  # loopback, private, link-local, CGNAT, reserved, ... (not global)
    "multicast_address",
    "response_too_large",
    "encoding_unsupported",  # a content encoding the guard cannot bound (not gzip or deflate)
    "too_slow",
    "too_many_redirects",
)

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.170.23",  # AWS EKS Pod Identity credentials
        "169.254.169.253",  # AWS DNS
        "169.254.0.23",  # Tencent Cloud
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
        "168.63.129.16",  # Azure WireServer: a global-looking address
        "fd00:ec2::254",  # AWS, IPv6
        "fd00:ec2::23",  # AWS EKS Pod Identity, IPv6
        "fd00:ec2::253",  # AWS DNS, IPv6
    )
)
METADATA_HOSTS = frozenset(
    {"metadata.google.internal", "metadata.goog", "metadata", "instance-data", "kubernetes.default"}
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Ranges `ipaddress` calls global that are not: deprecated site-local, the new documentation.
_NOT_GLOBAL_V6 = (ipaddress.ip_network("fec0::/10"), ipaddress.ip_network("3fff::/20"))
# IPv6 forms that carry an IPv4 address: a grant names native addresses, never these.
_TRANSITION = (
    ipaddress.ip_network("::ffff:0:0/96"),
    ipaddress.ip_network("::/96"),  # IPv4-compatible; ::1 (loopback) alone may be granted
    ipaddress.ip_network("64:ff9b::/96"),
    ipaddress.ip_network("64:ff9b:1::/48"),
    ipaddress.ip_network("2002::/16"),
    ipaddress.ip_network("2001::/32"),
)
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class EgressDenied(TenantGuardError):
    """An outbound request refused by the egress guard; `rule` names why (one of `RULES`)."""

    code = "egress_denied"
    title = "Egress denied"
    status = 403
    default_detail = "The outbound request was refused by the egress policy."
    rules: ClassVar[tuple[str, ...]] = RULES

    def __init__(self, rule: str) -> None:
        if rule not in RULES:
            raise ValueError(f"unknown egress rule {rule!r}")
        super().__init__(f"The outbound request was refused: {rule.replace('_', ' ')}.")
        self.rule = rule


@dataclass(frozen=True, slots=True)
class EgressGrant:
    """A private network a tenant may reach on some ports, granted explicitly (and audited by
    whoever grants it)."""

    network: IPNetwork
    ports: frozenset[int]

    def __post_init__(self) -> None:
        if not self.ports or any(not 0 < p < 65536 for p in self.ports):
            raise ValueError("a grant names the ports it opens")
        if any(a.version == self.network.version and a in self.network for a in METADATA_ADDRESSES):
            raise ValueError("metadata addresses cannot be granted")
        loopback = self.network == ipaddress.ip_network("::1/128")
        transition = any(self.network.overlaps(t) for t in _TRANSITION)
        if self.network.version == 6 and transition and not loopback:
            raise ValueError("a grant names native IPv6 addresses, not IPv4 in IPv6 forms")

    @classmethod
    def of(cls, network: str, ports: Iterable[int]) -> EgressGrant:
        return cls(ipaddress.ip_network(network, strict=True), frozenset(ports))

    def covers(self, address: IPAddress, port: int) -> bool:
        return (
            address.version == self.network.version
            and address in self.network
            and (port in self.ports)
        )


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """What one tenant's outbound calls may reach, and how much they may take."""

    allowed_ports: frozenset[int] = frozenset({80, 443})
    allow_hosts: tuple[str, ...] = ()  # empty: any public host; "*.example.com" for subdomains
    deny_hosts: tuple[str, ...] = ()
    grants: tuple[EgressGrant, ...] = ()
    max_response_bytes: int = 10 * 1024 * 1024
    timeout_seconds: float = 10.0
    max_redirects: int = 5
    own_addresses: frozenset[IPAddress] = field(default_factory=frozenset)  # the gateway's own


def loopback_grants() -> tuple[EgressGrant, ...]:
    """Loopback on every port: for local test providers only, behind a setting named unsafe
    (`TENANTGUARD_UNSAFE_LOOPBACK_SSO`)."""
    every_port = range(1, 65536)
    return (EgressGrant.of("127.0.0.0/8", every_port), EgressGrant.of("::1/128", every_port))


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str  # IDNA, lower case, no trailing dot; an IPv6 address without brackets
    port: int


def normalise_host(host: str) -> str:
    """A host or a `*.` pattern as `check_url` compares it: the ASCII form httpx sends (IDNA
    2008 for names with non-ASCII letters), lower case, no trailing dot."""
    prefix = "*." if host.startswith("*.") else ""
    bare = host[len(prefix) :].rstrip(".")
    if not bare.isascii():
        try:
            bare = httpx.URL(f"http://{bare}/").raw_host.decode("ascii")
        except (httpx.InvalidURL, ValueError) as exc:
            raise EgressDenied("host_invalid") from exc
    return prefix + bare.lower()


_LABEL = r"[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?"
_HOST_PATTERN = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL}){{0,126}}")


def host_pattern(value: str) -> str:
    """A host or `*.` pattern as lists and grants store it (`normalise_host`), or ValueError
    when it is not one (empty, a NUL, spaces, a bare `*`)."""
    if not isinstance(value, str) or not 0 < len(value) <= 253 or "\x00" in value:
        raise ValueError("not a host name")
    stripped = value.strip()
    try:
        normalised = normalise_host(stripped)
    except EgressDenied as exc:
        raise ValueError("not a host name") from exc
    if not _HOST_PATTERN.fullmatch(normalised):
        raise ValueError("not a host name")
    return normalised


def _matches(host: str, pattern: str) -> bool:
    pattern = normalise_host(pattern)  # host: already normalised by check_url
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and host != pattern[2:]
    return host == pattern


def check_url(url: str | httpx.URL, policy: EgressPolicy) -> Target:
    """The scheme, host and port of `url`, or `EgressDenied` naming the rule it breaks. The
    host is the URL's own ASCII form (punycode as written, never decoded and re-encoded by
    another IDNA standard), lower case, without a trailing dot."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        raw_host = parsed.raw_host.decode("ascii")
        scheme, port, userinfo = parsed.scheme, parsed.port, parsed.userinfo
    except (httpx.InvalidURL, TypeError, ValueError) as exc:  # UnicodeError is a ValueError
        raise EgressDenied("host_invalid") from exc
    if scheme not in ("http", "https"):
        raise EgressDenied("scheme")
    if userinfo:
        raise EgressDenied("userinfo")
    host = raw_host.rstrip(".").lower()
    if not host:
        raise EgressDenied("host_invalid")
    port = (443 if scheme == "https" else 80) if port is None else port
    if host in METADATA_HOSTS or any(_matches(host, p) for p in policy.deny_hosts):
        raise EgressDenied("host_denied")
    if policy.allow_hosts and not any(_matches(host, p) for p in policy.allow_hosts):
        raise EgressDenied("host_not_allowed")
    granted_port = any(port in g.ports for g in policy.grants)
    if not 0 < port < 65536 or (port not in policy.allowed_ports and not granted_port):
        raise EgressDenied("port")
    return Target(scheme, host, port)


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address leads to, in the forms that carry one."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client, de-obfuscated by ipaddress
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _IPV4_COMPATIBLE and int(address) > 1:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _unscoped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return ipaddress.IPv6Address(str(address).split("%", 1)[0])
    return address


def address_rule(address: IPAddress) -> str | None:
    """Why `address` may not be reached without a grant (a rule of `RULES`), or None."""
    bare = _unscoped(address)
    if bare in METADATA_ADDRESSES:
        return "metadata_address"
    if isinstance(bare, ipaddress.IPv6Address):
        inner = embedded_ipv4(bare)
        if inner is not None and (rule := address_rule(inner)) is not None:
            return rule
        if bare != address or bare in _NAT64_LOCAL or any(bare in n for n in _NOT_GLOBAL_V6):
            return "private_address"  # scoped (link-local by nature), local NAT64, site-local
        if inner is not None:
            return None  # the IPv4 address it leads to is global
    if bare.is_multicast:
        return "multicast_address"
    private = (
        bare.is_unspecified
        or bare.is_loopback
        or bare.is_link_local
        or bare.is_reserved
        or not bare.is_global
    )
    return "private_address" if private else None


def _same_host(address: IPAddress, own: frozenset[IPAddress]) -> bool:
    bare = _unscoped(address)
    inner = embedded_ipv4(bare) if isinstance(bare, ipaddress.IPv6Address) else None
    return bare in own or (inner is not None and inner in own)


def check_addresses(
    target: Target, addresses: Iterable[IPAddress], policy: EgressPolicy
) -> IPAddress:
    """The address to connect to: the first of `addresses`, once every one of them passed
    (a name that resolves to one internal address among public ones is refused whole, so
    which address a client library picks cannot matter)."""
    chosen = list(addresses)
    if not chosen:
        raise EgressDenied("resolution_failed")
    for address in chosen:
        if _same_host(address, policy.own_addresses):
            raise EgressDenied("private_address")
        rule = address_rule(address)
        if rule == "metadata_address":
            raise EgressDenied(rule)
        granted = any(g.covers(address, target.port) for g in policy.grants)
        if granted:
            continue
        if rule is not None:
            raise EgressDenied(rule)
        if target.port not in policy.allowed_ports:
            raise EgressDenied("port")
    return chosen[0]
