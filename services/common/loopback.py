"""Whether a listen address is reachable only from this machine: the line between the
development defaults (plaintext, the public dev secret) and what must be secured."""

from __future__ import annotations

import ipaddress


def host_of(address: str) -> str:
    """The host part of a `host:port` / `[v6]:port` listen address."""
    host, _, _port = address.strip().rpartition(":")
    return host.strip("[]") if host else address.strip()


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback IPs (127.0.0.0/8, ::1). Every other name or address,
    `0.0.0.0` and `::` above all, may be reachable from elsewhere."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_address(address: str) -> bool:
    """`is_loopback` for a listen address; a Unix socket (`unix:…`) is local too."""
    if address.strip().startswith(("unix:", "unix-abstract:")):
        return True
    return is_loopback(host_of(address))
