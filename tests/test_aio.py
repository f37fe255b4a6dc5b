"""The shared asyncio and process idioms: a periodic loop that outlives its failures,
stopping tasks, stopping child processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import time

import pytest

from yahaml_voice.core.aio import cancel_and_wait, every
from yahaml_voice.core.processes import kill_process, stop_child, stop_process


class Skipped(Exception):
    pass


async def test_every_survives_failures(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []
    fifth = asyncio.Event()

    async def flaky() -> None:
        calls.append(len(calls))
        if len(calls) == 2:
            raise RuntimeError("boom")
        if len(calls) == 3:
            raise Skipped("store restarting")
        if len(calls) == 5:
            fifth.set()

    with caplog.at_level(logging.WARNING):
        task = asyncio.create_task(every(0.01, flaky, what="flaky", quiet=(Skipped,)))
        await asyncio.wait_for(fifth.wait(), 5)
        await cancel_and_wait(task)
    assert task.cancelled()
    failed = [r for r in caplog.records if "flaky failed" in r.getMessage()]
    skipped = [r for r in caplog.records if "flaky skipped: store restarting" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info and len(skipped) == 1
    assert not skipped[0].exc_info


async def test_every_takes_sync_functions_and_waits_first() -> None:
    ticks: list[float] = []
    ticked = asyncio.Event()

    def tick() -> None:
        ticks.append(time.monotonic())
        ticked.set()

    started = time.monotonic()
    task = asyncio.create_task(every(0.1, tick, what="t", wait_first=True))
    await asyncio.sleep(0.05)
    assert ticks == []
    await asyncio.wait_for(ticked.wait(), 5)
    await cancel_and_wait(task)
    assert ticks[0] - started >= 0.1


async def test_cancel_and_wait_ends_every_task_and_skips_none() -> None:
    async def failed() -> None:
        raise ValueError("ended badly before the stop")

    early = asyncio.create_task(failed())
    await asyncio.sleep(0)
    sleepers = [asyncio.create_task(asyncio.sleep(60)) for _ in range(3)]
    await cancel_and_wait(*sleepers, None, early)
    assert all(t.cancelled() for t in sleepers) and early.done()


async def test_cancel_and_wait_lets_the_callers_cancellation_through() -> None:
    """Unlike `with suppress(CancelledError): await task`, a stop that is itself
    cancelled is not swallowed; it still returns only once the tasks have ended."""
    started = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            started.set()
            await asyncio.sleep(60)
        finally:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.05)  # cleanup that takes a moment

    inner = asyncio.create_task(slow_to_stop())
    await started.wait()
    outer = asyncio.create_task(cancel_and_wait(inner))
    await asyncio.sleep(0.01)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert inner.done()


# Says "ready" once SIGTERM is ignored: a sleep before stopping it was a race under load.
STUBBORN = (
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    " print('ready', flush=True); time.sleep(60)"
)


def test_stop_process_terms_then_kills() -> None:
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert stop_process(polite, 10) == -15
    stubborn = subprocess.Popen(
        [sys.executable, "-c", STUBBORN], start_new_session=True, stdout=subprocess.PIPE
    )
    assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
    started = time.monotonic()
    assert stop_process(stubborn, 0.5, group=True) == -9
    assert time.monotonic() - started < 5
    assert stop_process(stubborn) == -9 and kill_process(stubborn) == -9  # already gone


async def test_stop_child_terms_then_kills() -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", STUBBORN, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None and await child.stdout.readline() == b"ready\n"
    await stop_child(child, 0.5)
    assert child.returncode == -9
    await stop_child(child)  # already gone: nothing to do
