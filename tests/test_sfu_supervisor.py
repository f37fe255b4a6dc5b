"""Worker processes for real: the supervisor's children register over WebSocket.

A minimal `/sfu/ws` endpoint stands in for the server here (the server's own endpoint
has its own tests): it checks the bearer token, records frames and can feed the worker
garbage. The children are real `python -m yahaml_voice sfu` processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from tests.servers import TEST_SECRET, TEST_SFU_SECRET
from yahaml_voice.core.config import load_config
from yahaml_voice.core.tokens import verify_worker_token
from yahaml_voice.sfu.supervisor import Supervisor


class FakeControl:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.rejected = 0
        # Only the workers' secret: the children never see auth.secret.
        self.config = load_config(environ={}, overrides={"sfu.secret": TEST_SFU_SECRET})
        self.connections: list[ServerConnection] = []

    async def handler(self, ws: ServerConnection) -> None:
        header = ws.request.headers.get("Authorization", "") if ws.request else ""
        try:
            verify_worker_token(self.config, header.removeprefix("Bearer "))
            assert ws.request and ws.request.path == "/sfu/ws"
        except Exception:
            self.rejected += 1
            await ws.close(4401, "unauthorized")
            return
        self.connections.append(ws)
        # A worker must survive garbage from its server.
        for junk in ("nope", '{"type":"signal","data":{"roomId":"X X"}}', '{"type":"boom"}'):
            await ws.send(junk)
        async for raw in ws:
            self.frames.append(json.loads(raw))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [f["data"] for f in self.frames if f["type"] == kind]


async def wait_until(condition: Any, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_children_register_report_load_and_are_restarted() -> None:
    control = FakeControl()
    async with serve(control.handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        config = load_config(
            environ={},
            overrides={
                "auth.secret": TEST_SECRET,
                "sfu.secret": TEST_SFU_SECRET,
                "sfu.slots": 2,
                "sfu.ice_addresses": ["127.0.0.1"],
            },
        )
        supervisor = Supervisor(config, f"http://127.0.0.1:{port}", count=2)
        await supervisor.start()
        try:
            await wait_until(lambda: len(control.of("hello")) >= 2)
            hellos = control.of("hello")
            assert {h["slots"] for h in hellos} == {2}
            pids = {h["pid"] for h in hellos}
            assert pids == {p.pid for p in supervisor.processes.values()}
            await wait_until(lambda: len(control.of("load")) >= 4)
            assert control.rejected == 0
            # Kill one child: the supervisor starts a new one, which says hello again.
            victim = next(iter(pids))
            os.kill(victim, signal.SIGKILL)
            await wait_until(lambda: len(control.of("hello")) >= 3)
            assert supervisor.restarts == 1
            assert control.of("hello")[-1]["pid"] not in pids
        finally:
            await supervisor.stop()
        assert supervisor.processes == {}
