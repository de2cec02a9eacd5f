"""The egress checks, pure: every address form the guard must refuse, in IPv4 and IPv6 with
the embedded-IPv4 forms, metadata addresses whatever grants say, URL rules, tenant host lists
and grants."""

from __future__ import annotations

import ipaddress

import pytest

from tenantguard.egress.check import (
    RULES,
    EgressDenied,
    EgressGrant,
    EgressPolicy,
    Target,
    address_rule,
    check_addresses,
    check_url,
)

REFUSED = {
    "private_address": [
        "127.0.0.1", "127.255.255.254", "10.1.2.3", "172.16.0.1", "172.31.255.255",
        "192.168.1.1", "169.254.1.1", "100.64.0.1", "100.127.255.254", "0.0.0.0", "0.1.2.3",  # noqa: S104
        "240.0.0.1", "255.255.255.255", "198.18.0.1", "192.0.2.1", "198.51.100.1",
        "203.0.113.1", "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "2001:db8::1",
        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:0:0", "::127.0.0.1", "::10.0.0.1",
        "64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b:1::1", "2002:7f00:1::", "2002:c0a8:101::",
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
        "fe80::1%2",
    ],
    "multicast_address": ["224.0.0.1", "239.255.255.250", "ff02::1", "ff05::2"],
    "metadata_address": [
        "169.254.169.254", "169.254.170.2", "100.100.100.200", "192.0.0.192", "168.63.129.16",
        "fd00:ec2::254", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::",
    ],
}  # fmt: skip
PUBLIC = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::"]
POLICY = EgressPolicy()


@pytest.mark.parametrize(
    ("address", "rule"), [(a, r) for r, addresses in REFUSED.items() for a in addresses]
)
def test_internal_addresses_are_refused(address: str, rule: str) -> None:
    assert address_rule(ipaddress.ip_address(address)) == rule
    target = Target("https", "example.com", 443)
    with pytest.raises(EgressDenied) as refused:
        check_addresses(target, [ipaddress.ip_address(address)], POLICY)
    assert refused.value.rule == rule
    assert refused.value.status == 403


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert address_rule(ipaddress.ip_address(address)) is None


def test_one_internal_answer_refuses_the_whole_name() -> None:
    answers = [ipaddress.ip_address("8.8.8.8"), ipaddress.ip_address("10.0.0.1")]
    with pytest.raises(EgressDenied, match="private"):
        check_addresses(Target("https", "example.com", 443), answers, POLICY)
    with pytest.raises(EgressDenied) as empty:
        check_addresses(Target("https", "example.com", 443), [], POLICY)
    assert empty.value.rule == "resolution_failed"


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("ftp://example.com/", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://example.com/", "scheme"),
        ("https://user:pass@example.com/", "userinfo"),
        ("https://example.com:8443/", "port"),
        ("http://example.com:22/", "port"),
        ("http://metadata.google.internal/computeMetadata/v1/", "host_denied"),
        ("http://METADATA.GOOGLE.INTERNAL./", "host_denied"),
        ("http:///nohost", "host_invalid"),
        ("http://0177.0.0.1/", "host_invalid"),  # httpx refuses it; the resolver would not
    ],
)
def test_url_rules(url: str, rule: str) -> None:
    with pytest.raises(EgressDenied) as refused:
        check_url(url, POLICY)
    assert refused.value.rule == rule
    assert rule.replace("_", " ") in refused.value.detail


def test_tenant_host_lists_deny_wins_and_wildcards_mean_subdomains() -> None:
    policy = EgressPolicy(
        allow_hosts=("*.example.com", "api.other.example"), deny_hosts=("evil.example.com",)
    )
    assert check_url("https://docs.example.com/x", policy).host == "docs.example.com"
    assert check_url("https://API.Other.Example./", policy).host == "api.other.example"
    for url, rule in [
        ("https://example.com/", "host_not_allowed"),  # the wildcard is for subdomains only
        ("https://evil.example.com/", "host_denied"),
        ("https://notexample.com/", "host_not_allowed"),
        ("https://xexample.com/", "host_not_allowed"),
    ]:
        with pytest.raises(EgressDenied) as refused:
            check_url(url, policy)
        assert refused.value.rule == rule


def test_internationalised_names_are_compared_in_idna() -> None:
    policy = EgressPolicy(deny_hosts=("xn--bcher-kva.example",))
    with pytest.raises(EgressDenied, match="host denied"):
        check_url("https://bücher.example/", policy)


def test_grants_open_a_private_network_on_their_ports_only() -> None:
    grant = EgressGrant.of("10.0.0.0/24", [11434])
    policy = EgressPolicy(grants=(grant,))
    ollama = check_url("http://ollama.internal:11434/api/chat", policy)
    assert check_addresses(ollama, [ipaddress.ip_address("10.0.0.5")], policy) == (
        ipaddress.ip_address("10.0.0.5")
    )
    with pytest.raises(EgressDenied, match="private"):
        check_addresses(ollama, [ipaddress.ip_address("10.0.1.5")], policy)
    with pytest.raises(EgressDenied, match="port"):
        check_url("http://ollama.internal:8080/", policy)
    public_on_granted_port = Target("http", "example.com", 11434)
    with pytest.raises(EgressDenied, match="port"):  # a grant's port is for its network only
        check_addresses(public_on_granted_port, [ipaddress.ip_address("8.8.8.8")], policy)


def test_metadata_can_never_be_granted() -> None:
    with pytest.raises(ValueError, match="metadata"):
        EgressGrant.of("169.254.0.0/16", [80])
    with pytest.raises(ValueError, match="ports"):
        EgressGrant.of("10.0.0.0/8", [])
    with pytest.raises(ValueError, match="metadata"):  # built directly: checked all the same
        EgressGrant(ipaddress.ip_network("0.0.0.0/0"), frozenset({80}))
    with pytest.raises(ValueError, match="native"):
        EgressGrant.of("::ffff:0:0/96", [80])


def test_the_gateways_own_addresses_are_refused() -> None:
    own = ipaddress.ip_address("8.8.4.4")
    policy = EgressPolicy(own_addresses=frozenset({own}))
    with pytest.raises(EgressDenied):
        check_addresses(Target("https", "x", 443), [own], policy)


def test_rules_are_a_closed_set() -> None:
    with pytest.raises(ValueError, match="unknown"):
        EgressDenied("because")
    assert len(set(RULES)) == len(RULES)
