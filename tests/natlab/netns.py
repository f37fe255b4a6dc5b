"""Network namespace plumbing for the NAT lab: commands, and event loops living inside a netns.

A thread that calls setns(2) moves only itself; sockets it creates stay in that namespace.
So each lab client gets its own thread + asyncio loop inside its site's namespace, and
the test drives it from the main loop: real aiortc and real sockets, one Python process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"


class LabError(RuntimeError):
    """A lab command failed; the message has the command and its stderr."""


def run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True)
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")
    return done


def nsexec(ns: str, argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["ip", "netns", "exec", ns, *argv], check=check)


def unavailable_reason() -> str | None:
    """Why the lab cannot run here (None: it can). One line, for pytest.skip."""
    if os.geteuid() != 0:
        return "natlab needs root (network namespaces, veth, iptables)"
    for tool in ("ip", "iptables", "sysctl"):
        if shutil.which(tool) is None:
            return f"natlab needs `{tool}` (iproute2/iptables)"
    probe = f"yvprobe{uuid.uuid4().hex[:6]}"
    done = run(["ip", "netns", "add", probe], check=False)
    if done.returncode != 0:
        return f"natlab needs `ip netns`: {done.stderr.strip()}"
    try:
        nat = nsexec(probe, ["iptables", "-t", "nat", "-L", "-n"], check=False)
        if nat.returncode != 0:
            return f"natlab needs iptables NAT in a netns: {nat.stderr.strip()[:200]}"
    finally:
        run(["ip", "netns", "del", probe], check=False)
    return None


def enter(ns: str) -> None:
    """Move the calling thread into network namespace `ns` (setns(2); Python 3.11 has no os.setns)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns}): {os.strerror(err)}")
    finally:
        os.close(fd)


class NetnsLoop:
    """An asyncio event loop running in its own thread inside network namespace `ns`."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=f"netns-{ns}", daemon=True)

    def start(self) -> NetnsLoop:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def _main(self) -> None:
        try:
            enter(self.ns)
            self.loop = asyncio.new_event_loop()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        asyncio.set_event_loop(self.loop)
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` in the namespace's loop and await its result from another loop."""
        future = self.submit(coro)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except TimeoutError:
            future.cancel()
            raise

    def run_sync(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self.submit(coro).result(timeout)

    def stop(self) -> None:
        """Cancel what still runs in the loop, then stop it and join the thread."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(cancel_all(), loop).result(10)
        except Exception:
            pass
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
