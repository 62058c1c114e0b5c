"""The SSRF guard: which addresses an ``http`` step may connect to.

Everything that is not a public unicast address is refused — loopback, private, link-local,
shared (CGNAT), multicast, reserved, unspecified, and cloud metadata endpoints — unless
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
)


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
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return refused_reason(ip.ipv4_mapped)
    if any(ip in net for net in METADATA):
        return "cloud metadata"
    for name in ("unspecified", "loopback", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{name}"):
            return name.replace("_", "-")
    if not ip.is_global:
        return "not public"
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
