"""The time-out timer and over tracking of sfu/talkers.py, on a fake clock (20 ms packets)."""

from __future__ import annotations

from yahaml_voice.sfu.talkers import (
    CUT,
    DROP,
    FORWARD,
    MIN_OVER,
    NOTHING,
    RESET,
    UNKEY,
    UNKEYED,
    Talker,
)

LOUD, SILENT = 30, 127


class Clock:
    """Drives a Talker: packets every 20 ms and a tick every 100 ms, like the worker."""

    def __init__(self, talker: Talker) -> None:
        self.talker = talker
        self.now = 1000.0
        self.verdicts: list[int] = []
        self.events: list[tuple[float, int]] = []

    def run(self, seconds: float, level: int | None) -> None:
        """`level` None: no packets at all (a phone that stopped sending)."""
        steps = round(seconds / 0.02)
        for _ in range(steps):
            self.now = round(self.now + 0.02, 6)
            if level is not None:
                self.verdicts.append(self.talker.packet(level, self.now))
            if round(self.now * 50) % 5 == 0:
                event = self.talker.tick(self.now)
                if event != NOTHING:
                    self.events.append((self.now, event))

    def take(self) -> list[int]:
        verdicts, self.verdicts = self.verdicts, []
        return verdicts


def test_no_timer_forwards_everything_and_tracks_overs() -> None:
    clock = Clock(Talker())
    clock.run(5.0, LOUD)
    assert set(clock.take()) == {FORWARD}
    clock.run(1.0, SILENT)
    assert set(clock.take()) == {FORWARD}
    # One over ended ~UNKEY after the last loud packet.
    assert [e for _, e in clock.events] == [UNKEYED]
    ended = clock.events[0][0]
    assert 1005.0 + UNKEY <= ended <= 1005.0 + UNKEY + 0.1


def test_short_over_gets_no_tone_and_pauses_between_words_do_not_end_it() -> None:
    clock = Clock(Talker())
    clock.run(MIN_OVER - 0.1, LOUD)
    clock.run(1.0, None)
    assert clock.events == []
    for _ in range(5):  # words with 200 ms pauses: one over
        clock.run(0.4, LOUD)
        clock.run(0.2, SILENT)
    clock.run(1.0, SILENT)
    assert [e for _, e in clock.events] == [UNKEYED]


def test_time_out_cuts_locks_out_and_resets_after_silence() -> None:
    clock = Clock(Talker(tot=1.0, tot_reset=0.5))
    clock.run(0.98, LOUD)
    assert set(clock.take()) == {FORWARD}
    clock.run(0.04, LOUD)
    assert clock.take() == [FORWARD, CUT]
    # Locked out: loud and silent packets are dropped, and no courtesy tone.
    clock.run(2.0, LOUD)
    assert set(clock.take()) == {DROP}
    # Pauses shorter than tot_reset do not end the lockout.
    clock.run(0.3, SILENT)
    clock.run(0.5, LOUD)
    assert clock.events == [] and set(clock.take()) == {DROP}
    clock.run(0.7, SILENT)
    assert [e for _, e in clock.events] == [RESET]
    assert set(clock.take()) == {DROP, FORWARD}
    # A fresh transmission gets the full tot again.
    clock.run(0.9, LOUD)
    assert set(clock.take()) == {FORWARD}
    clock.run(0.2, LOUD)
    assert CUT in clock.take()


def test_gaps_shorter_than_tot_reset_keep_one_transmission() -> None:
    clock = Clock(Talker(tot=2.0, tot_reset=1.0))
    for _ in range(3):  # 3 x 0.8 s of speech with 0.6 s pauses: one 3.6 s transmission
        clock.run(0.8, LOUD)
        clock.run(0.6, SILENT)
    assert CUT in clock.take()
    # Pauses of tot_reset or more start a new transmission each time.
    clock2 = Clock(Talker(tot=2.0, tot_reset=1.0))
    for _ in range(4):
        clock2.run(1.5, LOUD)
        clock2.run(1.1, SILENT)
    assert CUT not in clock2.take()
    assert [e for _, e in clock2.events] == [UNKEYED] * 4


def test_exempt_and_reconfigure_end_a_lockout() -> None:
    talker = Talker(tot=1.0, tot_reset=5.0)
    clock = Clock(talker)
    clock.run(1.2, LOUD)
    assert talker.cut and CUT in clock.take()
    assert talker.configure(0.0, 5.0) is True  # became exempt (or tot off): lockout over
    assert not talker.cut
    clock.run(3.0, LOUD)
    assert set(clock.take()) == {FORWARD}
    assert talker.configure(0.0, 5.0) is False


def test_stopped_ends_an_over_without_a_tone() -> None:
    talker = Talker()
    clock = Clock(talker)
    clock.run(2.0, LOUD)
    talker.stopped()  # floor revoked mid-over
    clock.run(1.0, SILENT)
    assert clock.events == []
