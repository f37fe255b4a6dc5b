"""Direct mode (no systemd journal): the roles' logrotate entries rotate a live log.

The entries are rendered from the direct_service role's template with the very items the
yahaml_voice and coturn roles pass it (their tasks file, their defaults); real logrotate
rotates a file that a daemon started the way yv-direct starts one (start-stop-daemon
--output) keeps writing: the old lines move to .1, new ones land in a dense live file.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "deploy" / "roles"
LOGROTATE = shutil.which("logrotate") or "/usr/sbin/logrotate"
SSD = shutil.which("start-stop-daemon") or "/usr/sbin/start-stop-daemon"
pytestmark = pytest.mark.skipif(
    not (Path(LOGROTATE).exists() and Path(SSD).exists()), reason="logrotate missing"
)


def _defaults(role: str) -> dict[str, Any]:
    return yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text()) or {}


def render_entries(role: str, tasks: str, overrides: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, /etc/logrotate.d file content) for the logs `role` hands direct_service."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    include = next(
        task
        for task in yaml.safe_load((ROLES / role / "tasks" / tasks).read_text())
        if task.get("ansible.builtin.include_role", {}).get("name") == "direct_service"
    )
    variables: dict[str, Any] = {"ansible_managed": "test", "inventory_hostname": "localhost"}
    variables |= _defaults("direct_service") | _defaults(role) | overrides
    templar = Templar(loader=DataLoader(), variables=variables)
    source = (ROLES / "direct_service" / "templates" / "logrotate.j2").read_text()
    entries = []
    for raw in include["vars"]["direct_service_logs"]:
        item = {key: templar.template(value) for key, value in raw.items()}
        templar.available_variables = variables | {"item": item}
        entries.append((item["name"], str(templar.template(source))))
    return entries


def test_the_yahaml_voice_entry_rotates_a_log_a_daemon_keeps_writing(tmp_path: Path) -> None:
    logs = tmp_path / "log"
    logs.mkdir()
    [(name, entry)] = render_entries(
        "yahaml_voice",
        "services-direct.yml",
        {
            "yahaml_voice_log_dir": str(logs),
            "yahaml_voice_user": "root",
            "yahaml_voice_group": "root",
        },
    )
    assert name == "yahaml-voice" and "copytruncate" in entry
    conf = tmp_path / "logrotate.conf"
    conf.write_text(entry)
    log = logs / "yahaml-voice.log"
    log.touch()  # as yv-direct does before it starts a daemon
    pidfile = tmp_path / "writer.pid"
    script = "i=0; while [ $i -lt 500 ]; do echo line-$i; i=$((i+1)); sleep 0.02; done"
    subprocess.run(
        [
            *(SSD, "--start", "--background", "--make-pidfile", "--pidfile", str(pidfile)),
            *("--output", str(log), "--startas", "/bin/bash", "--", "-c", script),
        ],
        check=True,
    )
    try:
        deadline = time.monotonic() + 10
        while log.stat().st_size < 40:  # a few lines in
            assert time.monotonic() < deadline
            time.sleep(0.02)
        state = tmp_path / "state"
        rotate = subprocess.run(
            [LOGROTATE, "-f", "-s", str(state), str(conf)], capture_output=True, text=True
        )
        assert rotate.returncode == 0, rotate.stderr
        seen = log.stat().st_size
        deadline = time.monotonic() + 10
        while log.stat().st_size <= seen + 20:  # the daemon goes on writing
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        subprocess.run([SSD, "--stop", "--pidfile", str(pidfile), "--oknodo", "--quiet"])
    rotated = (logs / "yahaml-voice.log.1").read_text()
    assert rotated.startswith("line-0\n")
    live = log.read_bytes()
    assert live and not live.startswith(b"\0"), live[:40]  # O_APPEND: no hole where it was
    last_rotated = int(rotated.split()[-1].split("-")[1])
    assert int(live.split()[0].split(b"-")[1]) > last_rotated - 2


def test_the_coturn_entry_is_valid_logrotate(tmp_path: Path) -> None:
    [(name, entry)] = render_entries(
        "coturn", "service-direct.yml", {"coturn_log_dir": str(tmp_path)}
    )
    assert name == "yahaml-voice-coturn"
    assert f"{tmp_path}/*.log" in entry and "su turnserver turnserver" in entry
    conf = tmp_path / "coturn.logrotate"
    conf.write_text(entry.replace("su turnserver turnserver", "su root root"))
    check = subprocess.run(
        [LOGROTATE, "-d", "-s", str(tmp_path / "state"), str(conf)], capture_output=True, text=True
    )
    assert check.returncode == 0 and "error" not in check.stderr.lower(), check.stderr
