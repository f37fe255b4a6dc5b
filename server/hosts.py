"""The Host allow-list: a browser tricked by DNS rebinding sends a Host we never named."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import psutil

from yahaml_voice.core.config import Config

WILDCARDS = {"0.0.0.0", "::", ""}


def host_name(header: str | None) -> str:
    """`Example.org:8080` -> `example.org`, `[::1]:80` -> `::1` (lowercase, no port)."""
    value = (header or "").strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    if value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


def _local_addresses() -> set[str]:
    found = set()
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            text = address.address.partition("%")[0]
            try:
                found.add(str(ipaddress.ip_address(text)))
            except ValueError:
                continue
    return found


def allowed_hosts(config: Config) -> set[str] | None:
    """The host names this server answers to; None when the check is off ("*")."""
    configured = {host_name(h) for h in config.server.allowed_hosts}
    if "*" in configured:
        return None
    # Literal addresses and `localhost` are safe to always answer: a rebinding page
    # sends its own domain name as Host, never these.
    bind = config.server.host.strip("[]").lower()
    names = configured | {bind, "localhost", "127.0.0.1", "::1"}
    if config.server.public_url:
        names.add(host_name(urlsplit(config.server.public_url).netloc))
    if bind in WILDCARDS:
        names |= _local_addresses()
    names.discard("")
    return names


def host_allowed(header: str | None, allowed: set[str] | None) -> bool:
    return allowed is None or host_name(header) in allowed
