"""Per-client limits: token buckets keyed by source address or participant id.

Kept in process (each server process limits what it serves), in a bounded LRU so that an
attacker with many addresses or participant ids can only evict entries, never grow memory:
an evicted key starts again with a full bucket, which costs it nothing it had not already.
Limits that must hold across processes (seats per address, sockets per participant) are
counted in the Store instead; this module only names and counts their refusals.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Iterable

from yahaml_voice.core.config import Config

from .errors import ApiError

# Names of the limits, as they appear in /metrics (label `limit`) and in error messages.
SESSIONS = "sessions_per_address"
SOCKETS = "sockets_per_participant"
JOINS = "joins_per_participant"
SIGNALS = "signals_per_participant"
SEATS = "participants_per_address"
MEDIA = "media_timeout"
FRAMES = "frames_per_socket"
# Frames of an SFU worker dropped because their room's lane was full (worker_lanes.py).
WORKER_BACKLOG = "worker_frame_backlog"
LIMIT_NAMES = (SESSIONS, SOCKETS, JOINS, SIGNALS, SEATS, MEDIA, FRAMES, WORKER_BACKLOG)


# The error code of a refusal where it is not `rate_limited` (what the docs promise).
CODES = {SOCKETS: "too_many_sockets"}


class RateLimited(ApiError):
    """A client went over a limit: 429 with Retry-After (REST) or an error frame (WS)."""

    def __init__(self, limit: str, message: str, retry_after: float) -> None:
        seconds = str(max(1, math.ceil(retry_after)))
        super().__init__(429, CODES.get(limit, "rate_limited"), message, {"Retry-After": seconds})
        self.limit = limit
        self.retry_after = retry_after


class TokenBuckets:
    """One token bucket per key: `rate` tokens per second, at most `burst` saved up.

    At most `max_keys` keys are remembered; the least recently used is forgotten first.
    """

    def __init__(self, rate: float, burst: int, max_keys: int) -> None:
        self.rate = rate
        self.burst = float(max(burst, 1))
        self.max_keys = max_keys
        # key -> (tokens, time of the last update)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float | None = None) -> float:
        """Take one token: 0.0 when allowed, else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self.rate if self.rate > 0 else 60.0
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


def _networks(entries: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(e, strict=False) for e in entries]


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip().strip('"')
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class Limits:
    """The limits of one server process and the count of what each refused."""

    def __init__(self, config: Config) -> None:
        self.config = config
        limits = config.limits
        self.trusted = _networks(config.server.trusted_proxies)
        self.sessions = TokenBuckets(
            limits.sessions_per_minute / 60.0, limits.sessions_per_minute, limits.max_tracked
        )
        self.joins = TokenBuckets(limits.joins_per_second, limits.join_burst, limits.max_tracked)
        self.signals = TokenBuckets(
            limits.signals_per_second, limits.signal_burst, limits.max_tracked
        )
        self.frames = TokenBuckets(limits.frames_per_second, limits.frame_burst, limits.max_tracked)
        # Refusals per limit name since this process started (exported by /metrics).
        self.refused: dict[str, int] = dict.fromkeys(LIMIT_NAMES, 0)

    # source address ----------------------------------------------------------------------
    def _is_trusted(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in net for net in self.trusted)

    def client_address(self, peer: str | None, forwarded: Iterable[str] = ()) -> str:
        """The client's address: the peer's, or from a trusted proxy the right-most entry
        of X-Forwarded-For that is not itself a trusted proxy (entries further left are
        whatever the client wrote and prove nothing)."""
        address = _parse_ip(peer or "")
        if address is None:
            return peer or "unknown"
        if not self.trusted or not self._is_trusted(address):
            return str(address)
        hops = [e for value in forwarded for e in value.split(",") if e.strip()]
        for entry in reversed(hops):
            hop = _parse_ip(entry)
            if hop is None:
                # Garbage in the chain: the last hop we can trust is the proxy itself.
                break
            address = hop
            if not self._is_trusted(hop):
                break
        return str(address)

    # checks ------------------------------------------------------------------------------
    def _check(self, buckets: TokenBuckets, name: str, key: str, what: str, on: bool) -> None:
        if not on:
            return
        wait = buckets.take(key)
        if wait > 0:
            self.refuse(name)
            raise RateLimited(name, f"too many {what}; retry in {wait:.1f} s", wait)

    def session(self, address: str) -> None:
        per_minute = self.config.limits.sessions_per_minute
        self._check(
            self.sessions, SESSIONS, address,
            f"new sessions from your address (limit {per_minute} per minute)", per_minute > 0,
        )  # fmt: skip

    def join(self, participant_id: str) -> None:
        limits = self.config.limits
        self._check(
            self.joins, JOINS, participant_id, "joins",
            limits.joins_per_second > 0 and limits.join_burst > 0,
        )  # fmt: skip

    def signal(self, participant_id: str) -> None:
        limits = self.config.limits
        self._check(
            self.signals, SIGNALS, participant_id, "signals",
            limits.signals_per_second > 0 and limits.signal_burst > 0,
        )  # fmt: skip

    def frame(self, socket_id: str) -> bool:
        """Whether one more inbound frame of a participant socket is within its rate."""
        limits = self.config.limits
        if limits.frames_per_second <= 0 or limits.frame_burst <= 0:
            return True
        if self.frames.take(socket_id) > 0:
            self.refuse(FRAMES)
            return False
        return True

    def refuse(self, name: str) -> None:
        """Count one refusal of limit `name` (also for limits checked in the Store)."""
        self.refused[name] = self.refused.get(name, 0) + 1
