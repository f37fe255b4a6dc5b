"""Stopping a child process: SIGTERM, a grace period, then SIGKILL.

One spelling for the server's own children (sfu/supervisor.py, `yahaml-voice turn`) and
for the processes tests and benchmarks start. `group=True` signals the child's whole
process group (a child started with `start_new_session=True` and its own children, e.g.
a server and its SFU workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from typing import Any

# How long a child gets to die after SIGKILL before we stop waiting for it.
KILL_WAIT = 5.0


def _send(proc: subprocess.Popen[Any], sig: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)  # checks first that the child was not reaped already


def _signal_and_wait(
    proc: subprocess.Popen[Any], sig: int, timeout: float, group: bool
) -> int | None:
    """Signal the child unless it has exited; its exit code within `timeout` (None: not yet)."""
    if proc.poll() is None:
        _send(proc, sig, group)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def stop_process(
    proc: subprocess.Popen[Any], grace: float = 10.0, *, group: bool = False
) -> int | None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL; the exit code (None: still not reaped)."""
    code = _signal_and_wait(proc, signal.SIGTERM, grace, group)
    return code if code is not None else kill_process(proc, group=group)


def kill_process(proc: subprocess.Popen[Any], *, group: bool = False) -> int | None:
    """SIGKILL (like a crash) and reap; the exit code (None: still not reaped)."""
    return _signal_and_wait(proc, signal.SIGKILL, KILL_WAIT, group)


async def stop_child(
    process: asyncio.subprocess.Process, grace: float = 10.0, sig: int = signal.SIGTERM
) -> None:
    """The asyncio twin of stop_process, for children made by create_subprocess_exec
    (`sig` instead of SIGTERM: an SFU worker drains on SIGTERM, stops at once on SIGINT)."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)
    try:
        await asyncio.wait_for(process.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
