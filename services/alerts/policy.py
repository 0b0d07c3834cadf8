"""Webhook target policy: no requests to private, loopback, link-local, multicast or reserved
addresses unless an allow-list CIDR covers them; deny-list CIDRs/hosts always win.

Checked when an endpoint is created and again before every attempt (DNS can change).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from services.config import AlertsSettings, env_var, get_settings

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_EXTRA_BLOCKED = [ipaddress.ip_network(n) for n in ("100.64.0.0/10", "192.0.0.0/24", "198.18.0.0/15")]


class PolicyError(ValueError):
    """The URL may not be called; the message says why and which setting would change it."""


def _setting(field: str) -> str:
    """How a message names the setting that decides: its variable and its place in `Settings`."""
    return f"{env_var(AlertsSettings, field)} (settings.alerts.{field})"


def _kind(ip: IPAddress) -> str:
    for name in ("loopback", "link_local", "private", "multicast", "unspecified", "reserved"):
        if getattr(ip, f"is_{name}"):
            return name.replace("_", "-")
    return "shared/benchmarking (RFC 6598/2544)"


@dataclass
class UrlPolicy:
    allow_cidrs: list[str] = field(default_factory=list)
    deny_cidrs: list[str] = field(default_factory=list)
    deny_hosts: list[str] = field(default_factory=list)
    require_https: bool = False

    def __post_init__(self) -> None:
        self._allow = [ipaddress.ip_network(c, strict=False) for c in self.allow_cidrs]
        self._deny = [ipaddress.ip_network(c, strict=False) for c in self.deny_cidrs]
        self._deny_hosts = {h.lower().rstrip(".") for h in self.deny_hosts}

    @classmethod
    def configured(cls, a: AlertsSettings | None = None) -> UrlPolicy:
        """The policy the settings (`VOXPOP_ALERTS_ALLOW_CIDRS`, ...) ask for: one reading for every caller."""
        a = a or get_settings().alerts
        return cls(a.allow_cidrs, a.deny_cidrs, a.deny_hosts, a.require_https)

    def check(self, url: str, resolve: bool = True) -> list[IPAddress]:
        """Raise PolicyError unless ``url`` may be called; returns the addresses it resolves to."""
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or (self.require_https and parts.scheme != "https"):
            allowed = "https" if self.require_https else "http or https"
            hint = f"; http is refused while {_setting('require_https')} is true" if parts.scheme == "http" else ""
            raise PolicyError(f"scheme {parts.scheme!r} not allowed (use {allowed}){hint}")
        if parts.username or parts.password:
            raise PolicyError("credentials in webhook URLs are not allowed")
        host = (parts.hostname or "").lower().rstrip(".")
        if not host:
            raise PolicyError("URL has no host")
        if host in self._deny_hosts:
            raise PolicyError(f"host {host} is on the deny list {_setting('deny_hosts')}")
        addrs = self._addresses(host, parts.port or (443 if parts.scheme == "https" else 80), resolve)
        for a in addrs:
            self._check_ip(a)
        return addrs

    def _addresses(self, host: str, port: int, resolve: bool) -> list[IPAddress]:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        if not resolve:
            return []
        try:
            infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
        except OSError as e:
            raise PolicyError(f"cannot resolve {host}: {e}") from e
        # an AF_INET/AF_INET6 sockaddr starts with the host as a string (the scope id after "%")
        return list(dict.fromkeys(ipaddress.ip_address(str(i[4][0]).split("%")[0]) for i in infos))

    def _check_ip(self, ip: IPAddress) -> None:
        if isinstance(ip, ipaddress.IPv6Address):
            # IPv6 forms that carry an IPv4 address are judged by that address: IPv4-mapped
            # (::ffff:a.b.c.d), 6to4 (2002:AABB:CCDD::/48), Teredo (its client address) and NAT64
            # (64:ff9b::a.b.c.d), or [2002:a00:1::] would reach 10.0.0.1.
            embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
            if embedded is None and ip in _NAT64:
                embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            if embedded is not None:
                self._check_ip(ip if _in(ip, self._allow) else embedded)
                return
        if _in(ip, self._deny):
            raise PolicyError(f"{ip} is on the deny list {_setting('deny_cidrs')}")
        if _in(ip, self._allow):
            return
        special = (
            ip.is_private
            or ip.is_loopback
            or ip.is_link_local
            or ip.is_multicast
            or ip.is_reserved
            or ip.is_unspecified
            or _in(ip, _EXTRA_BLOCKED)
        )
        if special:
            cidr = f"{ip}/{ip.max_prefixlen}"
            raise PolicyError(
                f"{ip} is a {_kind(ip)} address: webhooks to private, loopback and reserved addresses are "
                f"refused unless {_setting('allow_cidrs')} covers them; to allow this one, set "
                f"{env_var(AlertsSettings, 'allow_cidrs')}='[\"{cidr}\"]' for the API and the dispatcher"
            )


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _in(ip: IPAddress, nets: Iterable[IPNetwork]) -> bool:
    return any(ip.version == n.version and ip in n for n in nets)


def redact_url(url: str) -> str:
    """Scheme, host and port only: webhook paths and queries carry tokens (Slack, Teams, Discord)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    hidden = "/***" if (parts.path not in ("", "/") or parts.query) else parts.path
    return f"{parts.scheme}://{host}{port}{hidden}"
