"""The SSRF guard: which addresses an ``http`` step may connect to.

Everything that is not a public unicast address is refused — loopback, private, link-local,
shared (CGNAT), multicast, reserved, documentation, unspecified, and cloud metadata endpoints,
also when embedded in an IPv6 transition address (mapped, 6to4, Teredo, NAT64) — unless
``TOLLWAY_HTTP_ALLOW`` lists it (comma-separated ``host``, ``host:port`` or CIDR; an IP entry
is a /32 or /128). The check runs inside the connection layer, on the address actually being
dialled after DNS resolution, so it also covers every redirect hop and DNS rebinding.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpcore

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA = (
    ipaddress.ip_network("169.254.169.254/32"),  # AWS, GCP, Azure, OpenStack
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS over IPv6
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud
    ipaddress.ip_network("168.63.129.16/32"),  # Azure's wire server
)

# Every special-purpose range, from IANA's registries, spelt out: the decision must not depend
# on the Python patch release (``is_private``/``is_global`` changed within 3.11 and 3.12).
_SPECIAL: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "reserved"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "reserved"),  # IPv4-compatible (deprecated)
    ("100::/64", "reserved"),  # discard-only
    ("2001::/23", "reserved"),  # IETF protocol assignments (Teredo is decoded before this)
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("fc00::/7", "private"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "reserved"),  # site-local (deprecated)
    ("ff00::/8", "multicast"),
)
SPECIAL = tuple((ipaddress.ip_network(net), reason) for net, reason in _SPECIAL)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address] | None:
    """The IPv4 addresses an IPv6 address reaches through a transition mechanism: mapped
    (``::ffff:0:0/96``), 6to4 (``2002::/16``), Teredo (``2001::/32``: its server and its
    de-obfuscated client) and NAT64 (``64:ff9b::/96``, ``64:ff9b:1::/48``, last 32 bits).
    None for a plain IPv6 address."""
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip in ipaddress.ip_network("2002::/16"):
        return [ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF)]
    if ip in ipaddress.ip_network("2001::/32"):
        server = ipaddress.IPv4Address((int(ip) >> 64) & 0xFFFFFFFF)
        client = ipaddress.IPv4Address(~int(ip) & 0xFFFFFFFF)
        return [server, client]
    if any(ip in net for net in _NAT64):
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    return None


class AddressRefused(Exception):
    """The destination resolves to an address the guard refuses."""


@dataclass(frozen=True)
class AllowList:
    hosts: frozenset[str] = frozenset()
    host_ports: frozenset[tuple[str, int]] = frozenset()
    networks: tuple[IPNetwork, ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, spec: str) -> AllowList:
        hosts: set[str] = set()
        host_ports: set[tuple[str, int]] = set()
        networks: list[IPNetwork] = []
        for raw in spec.split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            if entry.startswith("["):  # [v6] or [v6]:port
                host, _, rest = entry[1:].partition("]")
                port = rest.removeprefix(":")
            elif entry.count(":") == 1:
                host, port = entry.split(":")
            else:
                host, port = entry, ""
            if port.isdigit():
                host_ports.add((host, int(port)))
            else:
                hosts.add(host)
        return cls(frozenset(hosts), frozenset(host_ports), tuple(networks))

    def allows(self, host: str, port: int, ip: IPAddress) -> bool:
        host = host.lower().strip("[]")
        return (
            host in self.hosts
            or (host, port) in self.host_ports
            or (str(ip), port) in self.host_ports
            or any(ip in net for net in self.networks)
        )


def refused_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public destination, or None when it is."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            reasons = [r for r in map(refused_reason, inner) if r is not None]
            return reasons[0] if reasons else None
    if any(ip in net for net in METADATA):
        return "cloud metadata"
    for net, reason in SPECIAL:
        if ip.version == net.version and ip in net:
            return reason
    return None


def decide(host: str, port: int, ip: IPAddress, allow: AllowList) -> str | None:
    """None when the connection may go ahead, else the reason it is refused."""
    reason = refused_reason(ip)
    if reason is None or allow.allows(host, port, ip):
        return None
    return f"{host}:{port} resolves to {ip} ({reason}), which is not allowed"


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the guard applied to every dial."""

    def __init__(self, allow: AllowList) -> None:
        self._allow = allow
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise httpcore.ConnectError(f"{host} did not resolve: {exc.strerror}") from None
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        refusal = f"{host}:{port} did not resolve"
        for _family, _type, _proto, _name, sockaddr in infos:
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
            refusal_here = decide(host, port, ip, self._allow)
            if refusal_here is None:
                return await self._inner.connect_tcp(
                    str(ip),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            refusal = refusal_here
        raise AddressRefused(refusal)

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
