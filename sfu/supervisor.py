"""Child SFU workers for the embedded default: spawn N, restart the dead with backoff.

Each worker is a separate process (`python -m yahaml_voice sfu`) because forwarding is
CPU-bound Python under one GIL: processes are how it uses more than one core. The
children get their settings through YAHAML_VOICE_* variables rendered from the
parent's resolved config (including the workers' own secret `sfu.secret`, generated per
start unless configured, so a worker can mint a fresh token whenever it reconnects;
never the participants' `auth.secret`), never through the parent's own environment or file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from typing import Any

from yahaml_voice.core.aio import cancel_and_wait
from yahaml_voice.core.config import Config
from yahaml_voice.core.processes import stop_child

from .worker import PARENT_ENV

logger = logging.getLogger(__name__)

# Restart delays: 0.5 s doubling to 30 s; a child that ran this long resets the backoff.
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
HEALTHY_AFTER = 60.0
STOP_GRACE = 5.0


def child_environment(config: Config, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child worker: ours minus YAHAML_VOICE_*, plus its settings."""
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if not k.startswith("YAHAML_VOICE_")}
    settings: dict[str, Any] = {
        "SFU__SECRET": config.worker_secret(),
        "AUTH__ISSUER": config.auth.issuer,
        "SFU__SLOTS": config.sfu.slots,
        "SFU__SLOT_HOLD": float(config.sfu.slot_hold),
        "SFU__ICE_ADDRESSES": list(config.sfu.ice_addresses),
        "SFU__USE_TURN": config.sfu.use_turn,
        "SFU__NATIVE": config.sfu.native,
        "SFU__CASCADE_HOST": config.sfu.cascade_host,
        "ICE__STUN_URLS": list(config.ice.stun_urls),
        "ICE__TURN__URLS": list(config.ice.turn.urls),
        "ICE__TURN__TTL": float(config.ice.turn.ttl),
        "SERVER__LOG_LEVEL": config.server.log_level,
        # Recordings (recording.py): the same directory the server serves them from.
        "RECORDING__DIR": os.path.abspath(config.recording.dir),
        "RECORDING__QUEUE": config.recording.queue,
        "RECORDING__PARROT_MAX": float(config.recording.parrot_max),
    }
    if config.ice.turn.secret:
        settings["ICE__TURN__SECRET"] = config.ice.turn.secret
    for key, value in settings.items():
        env["YAHAML_VOICE_" + key] = value if isinstance(value, str) else json.dumps(value)
    env[PARENT_ENV] = str(os.getpid())
    return env


class Supervisor:
    """Keeps `count` worker children alive while the server runs."""

    def __init__(self, config: Config, server_url: str, count: int | None = None) -> None:
        self.config = config
        self.server_url = server_url
        self.count = config.worker_count() if count is None else count
        self.processes: dict[int, asyncio.subprocess.Process] = {}
        self.restarts = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        self._stopping = False
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._keep(index)) for index in range(self.count)]

    async def stop(self) -> None:
        self._stopping = True
        await cancel_and_wait(*self._tasks)
        self._tasks = []
        # SIGINT, not SIGTERM: the workers stop with their server, there is nowhere to drain to.
        await asyncio.gather(
            *(stop_child(p, STOP_GRACE, signal.SIGINT) for p in self.processes.values())
        )
        self.processes.clear()

    async def _spawn(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "yahaml_voice",
            "sfu",
            "--server",
            self.server_url,
            env=child_environment(self.config),
            stdin=asyncio.subprocess.DEVNULL,
        )

    async def _keep(self, index: int) -> None:
        delay = BACKOFF_FIRST
        while not self._stopping:
            started = time.monotonic()
            try:
                process = await self._spawn()
            except OSError as exc:
                logger.error("cannot start SFU worker %d: %s", index, exc)
            else:
                self.processes[index] = process
                logger.info("SFU worker %d started (pid %d)", index, process.pid)
                try:
                    code = await process.wait()
                except asyncio.CancelledError:
                    await stop_child(process, STOP_GRACE, signal.SIGINT)
                    raise
                logger.warning("SFU worker %d (pid %d) exited with %s", index, process.pid, code)
                self.restarts += 1
            if time.monotonic() - started >= HEALTHY_AFTER:
                delay = BACKOFF_FIRST
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
