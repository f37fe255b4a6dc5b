"""Speaker slot selection (pure logic, injected clock)."""

from __future__ import annotations

from yahaml_voice.sfu.slots import SlotSelector

LOUD = 20
QUIET = 127


def speak(sel: SlotSelector, pid: str, start: float, seconds: float, level: int = LOUD) -> float:
    """Feed 20 ms packets; return the end time."""
    t = start
    while t < start + seconds:
        sel.observe(pid, level, t)
        t += 0.02
    return t


def test_first_speakers_fill_empty_slots_in_loudness_order() -> None:
    sel = SlotSelector(2, hold=1.5)
    for pid in ("a", "b", "c"):
        sel.add(pid)
    speak(sel, "a", 0.0, 0.2, level=30)
    speak(sel, "b", 0.0, 0.2, level=10)
    assert sel.update(0.2)
    assert sel.slots == ["b", "a"]
    assert sel.speaking == ["b", "a"]
    assert not sel.update(0.2)


def test_hold_keeps_a_silent_speaker_then_releases_the_longest_silent() -> None:
    sel = SlotSelector(2, hold=1.5)
    for pid in ("a", "b", "c"):
        sel.add(pid)
    speak(sel, "a", 0.0, 0.5)
    sel.update(0.5)
    speak(sel, "b", 0.6, 0.5)
    sel.update(1.1)
    assert sel.slots == ["a", "b"]
    # c speaks 1.0 s after a fell silent: a is still held.
    end = speak(sel, "c", 1.5, 0.1)
    sel.update(end)
    assert sel.slots == ["a", "b"]
    # Once a was silent for the hold time, c takes a's slot (not b's, b spoke later).
    end = speak(sel, "c", end, 0.5)
    sel.update(end)
    assert sel.slots == ["c", "b"]


def test_quiet_packets_do_not_count_as_speech() -> None:
    sel = SlotSelector(3, hold=1.0)
    sel.add("a")
    speak(sel, "a", 0.0, 1.0, level=QUIET)
    assert not sel.update(1.0)
    assert sel.slots == [None, None, None]


def test_unknown_publishers_are_ignored_and_leaving_frees_the_slot() -> None:
    sel = SlotSelector(1, hold=10.0)
    sel.observe("ghost", LOUD, 0.0)
    sel.add("a")
    speak(sel, "a", 0.0, 0.2)
    sel.update(0.2)
    assert sel.slots == ["a"]
    sel.remove("a")
    assert sel.slots == [None]
    assert sel.slot_of("a") is None
    sel.add("b")
    speak(sel, "b", 0.3, 0.2)
    sel.update(0.5)
    assert sel.slots == ["b"] and sel.slot_of("b") == 0
