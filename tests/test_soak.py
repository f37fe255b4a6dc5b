"""The soak in one minute: bench/soak.py with 30 members (3 talkers, 27 listeners in two
processes), churn every 20 s, against a real server and SFU worker.

A correctness check, not a benchmark: the machine may be shared, so loss has a generous
bound; roster events and fds must hold exactly as in the full soak (`make soak`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import Settings, run

pytestmark = [pytest.mark.soak, pytest.mark.timeout(600)]


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
    summary = {k: report[k] for k in ("setup", "loss", "roster", "churn", "targets")}
    summary["loss"] = {k: v for k, v in report["loss"].items() if k != "series"}
    assert report["setup"]["joined"] == 30, summary
    assert report["member_error_count"] == 0, report["member_errors"]
    assert report["churn"] == {"rounds": 2, "rejoined": 6}, summary
    # Every join and leave reached every member that was in the room.
    assert report["roster"]["expected"] > 30 * 29 // 2, summary
    assert report["roster"]["lost"] == 0, summary
    # Packets: a loose bound (shared machine); every listener heard the talkers.
    assert report["loss"]["listeners_measured"] == 27, summary
    assert report["loss"]["loss_pct"] is not None and report["loss"]["loss_pct"] < 5.0, summary
    resources = report["resources"]
    for group in ("server", "worker"):
        fds = resources[f"{group}_fds"]
        assert fds["growth"] <= max(4.0, 0.05 * fds["baseline"]), (group, fds)
        rss = resources[f"{group}_rss_mb"]
        assert rss["growth_pct"] < 20.0, (group, rss)
    assert report["server_log_tracebacks"] == 0
