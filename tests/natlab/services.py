"""What runs on the lab's public segment: coturn and `yahaml-voice serve` processes.

The lab's coturn is the production template with one change, noted here on purpose:
`allowed_peer_ips` covers the lab's public addresses (10.231.0.0-10.231.99.255), because
the production deny list refuses 10.0.0.0/8 and every "public" address of this lab is a
10.231.x.x one. The site LANs (10.231.100+.x) stay denied, as private ranges should.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.fixtures.turn import TEST_SECRET, TurnServer, turn_config
from tests.natlab.lab import LAB_PUBLIC_PEERS, PUBLIC_IP, TURN_PORT, Lab
from tests.natlab.netns import NetnsLoop
from tests.servers import deep_merge
from yahaml_voice.core.config import Config
from yahaml_voice.core.processes import stop_process

ROOT = Path(__file__).resolve().parents[2]
AUTH_SECRET = "natlab-auth-secret-0123456789abcdef"


def lab_turn_config() -> Config:
    return turn_config(
        listen_ip=PUBLIC_IP,
        port=TURN_PORT,
        tls_port=5349,
        secret=TEST_SECRET,
        allowed_peer_ips=[LAB_PUBLIC_PEERS],
        min_port=49160,
        max_port=49400,
    )


def start_turn(lab: Lab) -> TurnServer:
    """coturn in the public namespace (TurnServer.stop() always kills it)."""
    server = TurnServer(lab_turn_config(), prefix=["ip", "netns", "exec", lab.pub])
    return server.start()


def stun_url() -> str:
    return f"stun:{PUBLIC_IP}:{TURN_PORT}"


def turn_urls(transport: str | None = None) -> list[str]:
    transports = [transport] if transport else ["udp", "tcp"]
    return [f"turn:{PUBLIC_IP}:{TURN_PORT}?transport={t}" for t in transports]


@dataclass
class LabServer:
    """`yahaml-voice serve` inside the public namespace (or `ns` at `host`), health-checked
    from inside it; `extra` is merged over its configuration."""

    lab: Lab | None
    port: int
    turn: bool
    force_relay: bool = False
    workers: int = 0
    rooms: list[dict[str, Any]] | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="natlab-srv-")))
    proc: subprocess.Popen[bytes] | None = None
    ns: str = ""
    host: str = PUBLIC_IP
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def config(self) -> dict[str, Any]:
        turn: dict[str, Any] = {"secret": TEST_SECRET, "realm": "yahaml-voice.test"}
        if self.turn:
            turn["urls"] = turn_urls()
        config: dict[str, Any] = {
            "server": {"host": self.host, "port": self.port, "grace_period": "2s"},
            "auth": {"mode": "open", "secret": AUTH_SECRET},
            "ice": {"stun_urls": [stun_url()], "turn": turn, "force_relay": self.force_relay},
            "sfu": {"ice_addresses": [self.host]},
            "netlog": {"path": str(self.workdir / "netlog.sqlite3")},
        }
        if self.rooms is not None:
            config["rooms"] = self.rooms
        return deep_merge(config, self.extra)

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def log_tail(self, lines: int = 80) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def start(self, probe: NetnsLoop, timeout: float = 30.0) -> LabServer:
        path = self.workdir / "config.yaml"
        path.write_text(yaml.safe_dump(self.config()))
        env = {k: v for k, v in os.environ.items() if not k.startswith("YAHAML_VOICE_")}
        env["PYTHONUNBUFFERED"] = "1"
        ns = self.ns or (self.lab.pub if self.lab is not None else "")
        argv = [
            "ip", "netns", "exec", ns, sys.executable, "-m", "yahaml_voice",
            "serve", "--config", str(path), "--workers", str(self.workers),
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lab server exited:\n{self.log_tail()}")
            health = probe.run_sync(_health(self.url), timeout=5)
            if health is not None and health.get("workers", 0) >= self.workers:
                return self
            time.sleep(0.2)
        raise TimeoutError(f"lab server not healthy:\n{self.log_tail()}")

    def terminate(self) -> None:
        """SIGTERM the server and its SFU children without waiting (see stop())."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)

    def stop(self) -> None:
        try:
            if self.proc is not None:
                stop_process(self.proc, 8, group=True)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


async def _health(url: str) -> dict[str, Any] | None:
    try:
        async with httpx.AsyncClient(timeout=1.0) as client:
            body: dict[str, Any] = (await client.get(url + "/healthz")).json()
            return body
    except (httpx.HTTPError, ValueError):
        return None
