"""Real server processes for tests and benchmarks: `yahaml-voice serve` on a free port."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from yahaml_voice.core.config import load_config
from yahaml_voice.core.processes import kill_process, stop_process
from yahaml_voice.core.tokens import issue_token

ROOT = Path(__file__).resolve().parent.parent
TEST_SECRET = "test-secret-for-yahaml-voice-0123456789"
METRICS_TOKEN = "metrics-token-for-tests-0123456789"
# The SFU workers' own secret (sfu.secret): never the participants' one.
TEST_SFU_SECRET = "test-sfu-secret-for-yahaml-voice-9876543210"


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class ServerProcess:
    """`yahaml-voice serve` as a child process with a YAML config written for it."""

    def __init__(
        self,
        workdir: Path,
        config: dict[str, Any] | None = None,
        port: int | None = None,
        env: dict[str, str] | None = None,
        workers: int = 0,
        name: str = "server",
        command: list[str] | None = None,
        cwd: Path = ROOT,
    ) -> None:
        self.port = port or free_port()
        # The `yahaml-voice` command to run (default: this checkout's, through this Python).
        self.command = command or [sys.executable, "-m", "yahaml_voice"]
        self.cwd = cwd
        self.workers = workers
        self.name = name
        base: dict[str, Any] = {
            "server": {"host": "127.0.0.1", "port": self.port, "test_hooks": True},
            "auth": {"mode": "open", "secret": TEST_SECRET},
            "metrics": {"token": METRICS_TOKEN},
            "sfu": {"secret": TEST_SFU_SECRET},
            # Every test client comes from 127.0.0.1: per-address limits would count them all
            # as one client (tests/test_limits.py sets them where it tests them).
            "limits": {"sessions_per_minute": 0, "participants_per_address": 0},
            # Its own net log file: tests never share one, and a restart of this same
            # ServerProcess (same name and port) finds its open nets again.
            "netlog": {"path": str(workdir / f"{name}-{self.port}-netlog.sqlite3")},
        }
        self.config = deep_merge(base, config or {})
        self.workdir = workdir
        self.config_path = workdir / f"{name}-{self.port}.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.log_path = workdir / f"{name}-{self.port}.log"
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> ServerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("YAHAML_VOICE_")}
        env.update(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                *self.command,
                "serve",
                "--config",
                str(self.config_path),
                "--workers",
                str(self.workers),
            ],
            cwd=self.cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 20.0, workers: int | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                body: dict[str, Any] = httpx.get(self.url + "/healthz", timeout=1.0).json()
                if workers is None or body.get("workers", 0) >= workers:
                    return body
            except (httpx.HTTPError, ValueError) as exc:
                last = exc
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not healthy in {timeout}s ({last}):\n{self.log_tail()}")

    def metrics(self) -> str:
        """The Prometheus exposition, read with the metrics token."""
        answer = httpx.get(
            self.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
        )
        answer.raise_for_status()
        return answer.text

    def log_tail(self, lines: int = 60) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def kill(self) -> None:
        """SIGKILL the whole process group (server and its SFU children)."""
        if self.proc:
            kill_process(self.proc, group=True)

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc, 10, group=True)


@contextlib.contextmanager
def running(
    folder: Path, config: dict[str, Any], name: str, workers: int = 0
) -> Iterator[ServerProcess]:
    """A server for a module's tests: started, healthy with its workers, always stopped."""
    proc = ServerProcess(folder, config, name=name, workers=workers)
    try:
        proc.start()
        proc.wait_healthy(timeout=60, workers=workers or None)
        yield proc
    finally:
        proc.stop()


def mint(
    callsign: str, rooms: list[str] | str = "*", role: str = "operator", ttl: float = 600
) -> str:
    """A participant token signed with the tests' secret (as a host application mints them)."""
    config = load_config(environ={}, overrides={"auth.secret": TEST_SECRET, "auth.mode": "token"})
    token, _ = issue_token(config, callsign, role=role, rooms=rooms, ttl=ttl)  # type: ignore[arg-type]
    return token
