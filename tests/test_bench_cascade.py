"""The cascade benchmark's harness (bench/sfu_cascade.py) with a handful of listeners.

A harness check, not a benchmark: real worker processes (origin and edge), the cascade
link relayed as the server does, real aiortc listeners; it asserts only that packets got
through on both workers and that the JSON has its keys (no timing: the machine is shared).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import sfu_cascade


@pytest.mark.timeout(180)
def test_cascade_bench_runs_and_writes_its_json(tmp_path: Path) -> None:
    output = tmp_path / "cascade.json"
    argv = ["--listeners", "4", "--window", "1", "--warmup", "1", "--nice", "0"]
    assert sfu_cascade.main([*argv, "--no-reference", "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    assert report["listeners"] == 4 and report["workers"] == 2
    assert report["loss_ratio"] is not None
    assert set(report["added_latency_ms"]) == {"p50", "p99"}
    (result,) = report["results"]
    origin, edge = result["extra"]["workers"]
    assert (origin["role"], edge["role"]) == ("origin", "edge")
    # Both workers' listeners heard the speaker; the edge's through the cascade link.
    assert origin["delivered"] > 0 and edge["delivered"] > 0, result
    assert origin["links"] == [edge["id"]]
    assert edge["cascade_received"] > 0
