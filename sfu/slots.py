"""Speaker slot selection: which publishers fill a room's few forwarded slots.

Every subscriber receives `slots` audio streams, not one per publisher, so a 300-person
net costs each listener three streams. The worker ranks publishers by the RFC 6464
audio level their packets carry (no decoding) and keeps a speaker in its slot for
`hold` seconds after it fell silent, so slots do not flap between words or when two
operators overlap. Pure logic with an injected clock: the forwarder feeds levels,
a periodic tick calls `update`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# RFC 6464 levels are -dBov (0 loudest, 127 silence). Below this a packet counts as speech:
# -50 dBov is well under normal speech and above the silence browsers send when muted.
SPEECH_LEVEL = 50
# A publisher counts as "speaking" while its last speech packet is younger than this;
# covers the gaps between words.
SPEAKING_WINDOW = 0.4
# Smoothing of the loudness used to rank simultaneous speakers (per packet, 20 ms).
LOUDNESS_ALPHA = 0.1


@dataclass
class _Publisher:
    last_loud: float = float("-inf")
    loudness: float = 0.0


class SlotSelector:
    """Maps the loudest current speakers of one room onto `count` slots.

    A new speaker takes an empty slot, else the slot of the occupant that has been
    silent longest, but only once that occupant has been silent for `hold` seconds.
    A publisher that leaves frees its slot at once.
    """

    def __init__(self, count: int, hold: float, speech_level: int = SPEECH_LEVEL) -> None:
        self.count = count
        self.hold = hold
        self.speech_level = speech_level
        self.slots: list[str | None] = [None] * count
        self.speaking: list[str] = []
        self._publishers: dict[str, _Publisher] = {}

    def add(self, participant_id: str) -> None:
        self._publishers.setdefault(participant_id, _Publisher())

    def remove(self, participant_id: str) -> None:
        self._publishers.pop(participant_id, None)
        self.slots = [None if p == participant_id else p for p in self.slots]
        if participant_id in self.speaking:
            self.speaking = [p for p in self.speaking if p != participant_id]

    def observe(self, participant_id: str, level: int, now: float) -> None:
        """One packet's audio level (0..127, -dBov) from a publisher."""
        pub = self._publishers.get(participant_id)
        if pub is None:
            return
        pub.loudness += LOUDNESS_ALPHA * ((127 - level) - pub.loudness)
        if level <= self.speech_level:
            pub.last_loud = now

    def slot_of(self, participant_id: str) -> int | None:
        try:
            return self.slots.index(participant_id)
        except ValueError:
            return None

    def update(self, now: float) -> bool:
        """Recompute slots and the speaking list; True when either changed."""
        pubs = self._publishers
        speaking = [p for p, s in pubs.items() if now - s.last_loud <= SPEAKING_WINDOW]
        speaking.sort(key=lambda p: pubs[p].loudness, reverse=True)
        before = list(self.slots)
        for pid in speaking:
            if pid in self.slots:
                continue
            index = self._free_slot(now)
            if index is None:
                break
            self.slots[index] = pid
        changed = before != self.slots or speaking != self.speaking
        self.speaking = speaking
        if before != self.slots:
            logger.debug("slots %s -> %s", before, self.slots)
        return changed

    def _free_slot(self, now: float) -> int | None:
        if None in self.slots:
            return self.slots.index(None)
        best: int | None = None
        best_silence = self.hold
        for index, pid in enumerate(self.slots):
            assert pid is not None
            silence = now - self._publishers[pid].last_loud
            if silence >= best_silence:
                best, best_silence = index, silence
        return best
