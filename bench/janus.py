"""Janus (Debian package) as the reference SFU of the forwarding benchmark.

`JanusProcess` writes a throwaway configuration (HTTP API on 127.0.0.1 only, ICE on the
loopback interface only, VideoRoom the only plugin, one event loop: Janus's cheapest
setting for many handles) and runs /usr/bin/janus. `JanusClient` is the small part of
the Janus HTTP API the benchmark needs: a session with long-polled events, one handle
per publisher or subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from yahaml_voice.core.processes import stop_process

JANUS = "/usr/bin/janus"
LIB = Path("/usr/lib/x86_64-linux-gnu/janus")


def available() -> bool:
    return os.path.exists(JANUS) and (LIB / "plugins" / "libjanus_videoroom.so").exists()


class JanusProcess:
    def __init__(
        self,
        workdir: Path,
        port: int,
        interface: str = "lo",
        prefix: list[str] | None = None,
        event_loops: int = 1,
        debug_level: int = 2,
    ) -> None:
        self.debug_level = debug_level
        self.interface = interface
        self.prefix = prefix or []
        self.workdir = workdir
        self.port = port
        self.event_loops = event_loops
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{port}/janus"

    def _write_config(self) -> Path:
        folder = self.workdir / "janus-config"
        folder.mkdir(parents=True, exist_ok=True)
        plugins = sorted(
            p.name for p in (LIB / "plugins").glob("*.so") if p.name != "libjanus_videoroom.so"
        )
        transports = sorted(
            p.name for p in (LIB / "transports").glob("*.so") if p.name != "libjanus_http.so"
        )
        events = sorted(p.name for p in (LIB / "events").glob("*.so"))
        loggers = sorted(p.name for p in (LIB / "loggers").glob("*.so"))
        (folder / "janus.jcfg").write_text(
            f"""general: {{
    configs_folder = "{folder}"
    plugins_folder = "{LIB / "plugins"}"
    transports_folder = "{LIB / "transports"}"
    events_folder = "{LIB / "events"}"
    loggers_folder = "{LIB / "loggers"}"
    debug_level = {self.debug_level}
    session_timeout = 0
    event_loops = {self.event_loops}
}}
certificates: {{
}}
media: {{
    ipv6 = false
    rtp_port_range = "40000-60000"
    no_media_timer = 0
}}
nat: {{
    ice_enforce_list = "{self.interface}"
    ignore_mdns = true
}}
plugins: {{
    disable = "{",".join(plugins)}"
}}
transports: {{
    disable = "{",".join(transports)}"
}}
loggers: {{
    disable = "{",".join(loggers)}"
}}
events: {{
    broadcast = false
    disable = "{",".join(events)}"
}}
"""
        )
        (folder / "janus.transport.http.jcfg").write_text(
            f"""general: {{
    json = "plain"
    base_path = "/janus"
    http = true
    port = {self.port}
    ip = "127.0.0.1"
    https = false
}}
admin: {{
    admin_http = false
}}
"""
        )
        (folder / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n")
        return folder

    def start(self) -> JanusProcess:
        """Spawn Janus; clients wait for its API (it may live in another network namespace)."""
        folder = self._write_config()
        log = open(self.workdir / "janus.log", "ab")
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                JANUS,
                "-F",
                str(folder),
                "-C",
                str(folder / "janus.jcfg"),
                "-E",
                self.interface,
                "-L",
                str(self.workdir / "janus-run.log"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(0.5)
        if self.proc.poll() is not None:
            raise RuntimeError(f"janus exited {self.proc.returncode}; see {log.name}")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc, 10, group=True)


def which() -> str | None:
    return shutil.which("janus")


class JanusClient:
    """One Janus session; handles are attached per publisher/subscriber."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.AsyncClient(timeout=30.0)
        self.session: int | None = None
        self.handles: dict[str, int] = {}
        self.publisher_id: int | None = None
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._poller: asyncio.Task[None] | None = None

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "transaction": f"t{random.getrandbits(48):x}"}
        response = await self.http.post(self.url + path, json=body)
        data: dict[str, Any] = response.json()
        if data.get("janus") == "error":
            raise RuntimeError(f"janus error: {data}")
        return data

    async def start(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.session = (await self._post("", {"janus": "create"}))["data"]["id"]
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        self._poller = asyncio.ensure_future(self._poll())

    async def _poll(self) -> None:
        while True:
            try:
                response = await self.http.get(f"{self.url}/{self.session}?maxev=20", timeout=40)
                events = response.json()
            except (httpx.HTTPError, ValueError):
                await asyncio.sleep(0.2)
                continue
            for event in events if isinstance(events, list) else [events]:
                transaction = event.get("transaction")
                if event.get("janus") == "event" and transaction in self._waiters:
                    self._waiters.pop(transaction).set_result(event)

    async def _attach(self, name: str) -> int:
        data = await self._post(
            f"/{self.session}", {"janus": "attach", "plugin": "janus.plugin.videoroom"}
        )
        handle: int = data["data"]["id"]
        self.handles[name] = handle
        return handle

    async def _message(
        self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        transaction = f"t{random.getrandbits(48):x}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[transaction] = future
        message: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
        if jsep is not None:
            message["jsep"] = jsep
        response = await self.http.post(f"{self.url}/{self.session}/{handle}", json=message)
        data = response.json()
        if data.get("janus") == "success":  # synchronous request: no event follows
            self._waiters.pop(transaction, None)
            result: dict[str, Any] = data
            return result
        if data.get("janus") == "error":
            self._waiters.pop(transaction, None)
            raise RuntimeError(f"janus error: {data}")
        return await asyncio.wait_for(future, 30)

    async def create_room(self, room: int, publishers: int = 4) -> None:
        handle = await self._attach("admin")
        data = await self._message(
            handle,
            {
                "request": "create",
                "room": room,
                "publishers": publishers,
                "audiocodec": "opus",
                "audiolevel_ext": True,
                "audiolevel_event": False,
                "bitrate": 0,
            },
        )
        assert data["plugindata"]["data"].get("videoroom") == "created", data

    async def publish(self, room: int, sdp: str) -> str:
        handle = await self._attach("publisher")
        event = await self._message(
            handle,
            {"request": "joinandconfigure", "room": room, "ptype": "publisher", "display": "pub"},
            {"type": "offer", "sdp": sdp},
        )
        self.publisher_id = event["plugindata"]["data"]["id"]
        answer: str = event["jsep"]["sdp"]
        return answer

    async def subscribe(self, room: int, feed: int, name: str) -> str:
        handle = await self._attach(name)
        event = await self._message(
            handle,
            {"request": "join", "room": room, "ptype": "subscriber", "streams": [{"feed": feed}]},
        )
        offer: str = event["jsep"]["sdp"]
        return offer

    async def start_subscriber(self, name: str, sdp: str) -> None:
        await self._message(
            self.handles[name], {"request": "start"}, {"type": "answer", "sdp": sdp}
        )

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(BaseException):
                await self._poller
        with contextlib.suppress(httpx.HTTPError):
            await self._post(f"/{self.session}", {"janus": "destroy"})
        await self.http.aclose()
