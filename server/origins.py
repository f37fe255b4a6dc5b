"""Origin checks for browsers (WebSocket upgrades and CORS)."""

from __future__ import annotations

from urllib.parse import urlsplit


def origin_allowed(origin: str | None, host: str | None, allowed: list[str]) -> bool:
    """No Origin (non-browser clients), the same origin, or one listed in config."""
    if not origin:
        return True
    if "*" in allowed or origin in allowed:
        return True
    if host and urlsplit(origin).netloc.lower() == host.lower():
        return True
    return False
