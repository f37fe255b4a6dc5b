"""Time stamps on the wire: one spelling for every `...At` and `timestamp` field."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(ts: float) -> str:
    """Unix time as ISO 8601 UTC with a `Z` (what YAHAML's clients parse)."""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
