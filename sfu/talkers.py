"""Keyed/unkeyed state of one publisher: the time-out timer and the end of an over.

A repeater's time-out timer cuts a station that transmits too long (a stuck PTT, a
rambler) and lets it back once it has been silent for a while; a courtesy tone tells
everyone an over has ended. Both need only when a publisher's packets say "not silent"
(RFC 6464 level from the tap, no decoding). Pure logic with an injected clock: the
tap calls `packet` for each received packet, the room's tick calls `tick`.

- transmitting: non-silent packets whose gaps stay under `tot_reset` (at least
  UNKEY); longer than `tot` (not exempt) is cut: dropped until silent for `tot_reset`.
- an over: non-silent packets until UNKEY of silence; one of at least MIN_OVER earns a
  courtesy tone when it ends (not when it was cut or stopped by losing the floor).
"""

from __future__ import annotations

import math

from .slots import SPEECH_LEVEL

# Silence (no non-silent packet) that ends an over: the courtesy tone follows it.
UNKEY = 0.3
# An over shorter than this (a cough, a click) gets no courtesy tone.
MIN_OVER = 0.5

# What `packet` says about one packet.
FORWARD = 0
DROP = 1  # cut: locked out
CUT = 2  # cut by this very packet: tell the server (then drop)

# What `tick` reports.
NOTHING = 0
UNKEYED = 1  # an over of at least MIN_OVER ended: courtesy tone
RESET = 2  # the lockout ended: tell the server


class Talker:
    """One publisher's transmission state (timestamps from one monotonic clock)."""

    __slots__ = (
        "cut",
        "gap",
        "last_loud",
        "over_since",
        "speech_level",
        "tot",
        "tot_reset",
        "tx_since",
    )

    def __init__(self, tot: float = 0.0, tot_reset: float = 0.0, speech_level: int = SPEECH_LEVEL):
        self.tot = tot
        self.tot_reset = tot_reset
        self.gap = max(tot_reset, UNKEY)
        self.speech_level = speech_level
        self.last_loud = -math.inf
        self.tx_since: float | None = None  # start of the current transmission (TOT)
        self.over_since: float | None = None  # start of the current over (courtesy)
        self.cut = False

    def configure(self, tot: float, tot_reset: float) -> bool:
        """New limits (0: no timer); True when this ended a lockout (tell the server)."""
        self.tot, self.tot_reset = tot, tot_reset
        self.gap = max(tot_reset, UNKEY)
        if self.cut and not tot:
            self.cut = False
            self.tx_since = None
            return True
        return False

    def stopped(self) -> None:
        """No longer forwarded (floor revoked, muted): its over ends without a tone and
        its next transmission starts afresh."""
        self.over_since = None
        if not self.cut:
            self.tx_since = None

    def packet(self, level: int, now: float) -> int:
        """One received packet's level (0..127 -dBov): FORWARD, DROP or CUT."""
        if level > self.speech_level:
            return DROP if self.cut else FORWARD
        if self.tx_since is None or now - self.last_loud >= self.gap:
            self.tx_since = now
        self.last_loud = now
        if self.cut:
            return DROP
        if self.over_since is None:
            self.over_since = now
        if self.tot and now - self.tx_since >= self.tot:
            self.cut = True
            self.over_since = None
            return CUT
        return FORWARD

    def tick(self, now: float) -> int:
        """Time passing: NOTHING, UNKEYED (an over ended) or RESET (lockout over)."""
        if self.cut:
            if now - self.last_loud >= self.tot_reset:
                self.cut = False
                self.tx_since = None
                return RESET
            return NOTHING
        if self.over_since is not None and now - self.last_loud >= UNKEY:
            length = self.last_loud - self.over_since
            self.over_since = None
            if length >= MIN_OVER:
                return UNKEYED
        return NOTHING
