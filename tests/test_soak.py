"""The soak in one minute: bench/soak.py with 30 members (3 talkers, 27 listeners in two
processes), churn every 20 s, against a real server and SFU worker.

A correctness check, not a benchmark: the machine may be shared, so loss has a generous
bound; roster events and fds must hold exactly as in the full soak (`make soak`).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

from bench.soak import Settings, packet_loss, roster_loss, run, summary
from tests.voiceclient import PacketCounter


@pytest.mark.soak
@pytest.mark.timeout(600)
def test_one_minute_soak_keeps_roster_fds_and_memory(tmp_path: Path) -> None:
    settings = Settings(
        participants=30,
        talkers=3,
        duration=60.0,
        warmup=15.0,
        turn=4.0,
        churn_interval=20.0,
        churn_fraction=0.1,
        listeners_per_process=14,
        join_concurrency=6,
    )
    report = run(settings, tmp_path)
    print(summary(report))  # shown on failure, or with -s
    brief = {k: report[k] for k in ("setup", "loss", "roster", "churn", "targets")}
    brief["loss"] = {k: v for k, v in report["loss"].items() if k != "series"}
    assert report["setup"]["joined"] == 30, brief
    assert report["member_error_count"] == 0, report["member_errors"]
    assert report["churn"] == {"rounds": 2, "rejoined": 6}, brief
    # Every join and leave reached every member that was in the room.
    assert report["roster"]["expected"] > 30 * 29 // 2, brief
    assert report["roster"]["lost"] == 0, brief
    # Packets: a loose bound (shared machine); every listener heard the talkers.
    assert report["loss"]["listeners_measured"] == 27, brief
    assert report["loss"]["loss_pct"] is not None and report["loss"]["loss_pct"] < 5.0, brief
    resources = report["resources"]
    for group in ("server", "worker"):
        fds = resources[f"{group}_fds"]
        assert fds["growth"] <= max(4.0, 0.05 * fds["baseline"]), (group, fds)
        rss = resources[f"{group}_rss_mb"]
        assert rss["growth_pct"] < 20.0, (group, rss)
    assert report["server_log_tracebacks"] == 0


# The measures themselves, on made-up data (fast: no server).


def rtp(seq: int, ssrc: int = 7, level: int | None = None) -> bytes:
    header = bytes([0x90 if level is not None else 0x80, 111]) + struct.pack(
        "!HII", seq & 0xFFFF, seq * 960, ssrc
    )
    if level is None:
        return header + b"opus"
    # One-byte-header extensions: mid (id 3) then audio level (id 1), padded to 4 bytes.
    ext = bytes([0x30, ord("0"), 0x10, level, 0, 0, 0, 0])
    return header + struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext + b"opus"


def test_packet_counter_counts_gaps_late_packets_duplicates_and_wraps() -> None:
    counter = PacketCounter()
    counter.level_id = 1
    for seq in [65533, 65534, 65535, 0, 3, 1, 1, 4]:  # 2 is lost, 1 comes late and twice
        counter.on_rtp(rtp(seq, level=20))
    counter.on_rtp(rtp(100, ssrc=9, level=90))  # another stream, quiet
    counter.on_rtp(rtp(101, ssrc=9))  # no extension
    received, lost, loud = (sum(b[i] for b in counter.seconds.values()) for i in range(3))
    assert (received, lost, loud) == (9, 1, 7)


def member(pid: str, sessions: list[dict[str, float]], roster: list[list[Any]], **kw: Any) -> Any:
    return {"pid": pid, "talker": False, "sessions": sessions, "roster": roster, **kw}


def test_roster_loss_counts_what_a_member_missed_during_its_stay() -> None:
    a = member("a", [{"join_req": 0, "join_resp": 1, "leave_req": 50, "leave_resp": 51}], [[]])
    b = member(
        "b",
        [
            {"join_req": 10, "join_resp": 11, "leave_req": 20, "leave_resp": 21},
            {"join_req": 30, "join_resp": 31},
        ],
        [[], []],
    )
    # a saw b's first join and its leave, but not b's rejoin; b saw nothing of a (a
    # joined before b's stays and left after the second began: one leave missed).
    a["roster"][0] = [("participantJoined", "b", 11.1), ("participantLeft", "b", 21.1)]
    result = roster_loss([a, b], end=60)
    assert result["expected"] == 4
    assert result["lost"] == 2
    assert {(e["member"], e["event"]) for e in result["examples"]} == {
        ("a", "participantJoined"),
        ("b", "participantLeft"),
    }


def test_packet_loss_counts_sequence_gaps_and_silent_seconds_in_settled_turns() -> None:
    # A turn from 100 to 110 s: whole seconds 101..108 count while the listener is settled.
    turns = [(0, 100.0, 110.0)]
    seconds = {str(s): [150, 0, 50] for s in range(95, 112)}
    seconds["104"] = [148, 2, 49]
    seconds["106"] = [100, 0, 0]  # the talker's stream stalled: 50 lost
    seconds["108"] = [0, 50, 0]  # around the listener's own rejoin: ignored
    listener = member(
        "l",
        [
            {"join_req": 0, "join_resp": 1, "media_at": 2, "leave_req": 108.5, "leave_resp": 108.6},
            {"join_req": 109, "join_resp": 109.2, "media_at": 109.5},
        ],
        [[], []],
        seconds=seconds,
    )
    result = packet_loss([listener], turns, (0.0, 200.0))
    assert result["listener_seconds"] == 6  # 101..106; 107 ends within 1 s of leaving
    assert (result["received"], result["lost_by_sequence"]) == (848, 2)
    assert result["silent_listener_seconds"] == 1
    assert result["loss_pct"] == round(100 * 52 / 900, 4)
