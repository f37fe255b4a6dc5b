"""Two "hosts" for a room spanning SFU workers on separate machines (issue 14).

Two network namespaces joined by one veth pair (10.231.200.1 and .2, inside the lab's
range and checked unused first, like lab.py); each runs a server with its own SFU worker,
and host A a Redis both servers share. Nothing is routed anywhere else. Always
`teardown()` in a finally.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from tests.natlab.lab import PREFIX, check_free, cleanup_stale, kill_ns_processes
from tests.natlab.netns import NetnsLoop, nsexec, run
from tests.redis_fixture import REDIS_SERVER
from tests.servers import free_port

HOST_A = "10.231.200.1"
HOST_B = "10.231.200.2"
NET = ipaddress.ip_network("10.231.200.0/24")


@dataclass
class TwoHosts:
    tag: str = field(default_factory=lambda: str(os.getpid()))
    namespaces: list[str] = field(default_factory=list)
    redis: subprocess.Popen[bytes] | None = None

    @property
    def ns_a(self) -> str:
        return f"{PREFIX}{self.tag}-hosta"

    @property
    def ns_b(self) -> str:
        return f"{PREFIX}{self.tag}-hostb"

    def build(self) -> TwoHosts:
        cleanup_stale()
        check_free([NET])  # type: ignore[list-item]
        for ns in (self.ns_a, self.ns_b):
            run(["ip", "netns", "add", ns])
            self.namespaces.append(ns)
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            nsexec(ns, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
        run(["ip", "link", "add", "eth0", "netns", self.ns_a, "type", "veth", "peer", "name",
             "eth0", "netns", self.ns_b])  # fmt: skip
        for ns, address in ((self.ns_a, HOST_A), (self.ns_b, HOST_B)):
            run(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0"])
            run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        return self

    def start_redis(self, probe: NetnsLoop, timeout: float = 15.0) -> str:
        """redis-server on host A; its URL (reachable from both hosts)."""
        port = free_port()
        workdir = tempfile.mkdtemp(prefix="yv-hosts-redis-")
        self.redis = subprocess.Popen(
            ["ip", "netns", "exec", self.ns_a, REDIS_SERVER, "--port", str(port),
             "--bind", HOST_A, "--save", "", "--appendonly", "no", "--dir", workdir,
             "--protected-mode", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not probe.run_sync(_ping(HOST_A, port), timeout=5):
            if self.redis.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server on host A did not start")
            time.sleep(0.1)
        return f"redis://{HOST_A}:{port}/0"

    def teardown(self) -> None:
        if self.redis is not None and self.redis.poll() is None:
            self.redis.kill()
            self.redis.wait(5)
        for ns in reversed(self.namespaces):
            kill_ns_processes(ns)
            run(["ip", "netns", "del", ns], check=False)
        self.namespaces.clear()


async def _ping(host: str, port: int) -> bool:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"PING\r\n")
        return (await asyncio.wait_for(reader.read(64), 1.0)).startswith(b"+PONG")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
