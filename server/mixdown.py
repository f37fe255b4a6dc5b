"""Rendering `mixed.opus` after a recording ends, in a separate process.

Mixing decodes every slot track and encodes once (PyAV): CPU the server's event loop and
the forwarding workers must never pay. The server only starts `python -m yahaml_voice mix
<dir>` when the origin worker reports the recording stopped or failed, at most
MAX_RUNNING at a time (more wait, up to MAX_WAITING; beyond that the request is dropped
with a warning: the slot tracks stay, a mix can be made by hand), each killed after
TIMEOUT. A mix that fails (or a build without the `mix` command) is logged, nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from yahaml_voice.core.aio import cancel_and_wait

log = logging.getLogger(__name__)

MAX_RUNNING = 2
MAX_WAITING = 32
# A 3-hour net of 4 slot tracks mixes in well under a minute on one core.
TIMEOUT = 600.0


class Mixer:
    def __init__(
        self,
        command: Sequence[str] = (sys.executable, "-m", "yahaml_voice", "mix"),
        max_running: int = MAX_RUNNING,
        timeout: float = TIMEOUT,
    ) -> None:
        self.command = tuple(command)
        self.timeout = timeout
        self._slots = asyncio.Semaphore(max_running)
        self._tasks: set[asyncio.Task[None]] = set()
        self._asked: set[Path] = set()
        # Every directory a mix was requested for (tests, /metrics).
        self.requested: list[Path] = []
        self.failed = 0

    def request(self, folder: Path) -> bool:
        """Mix `folder` soon (once per directory per process); False if dropped or asked
        before."""
        if folder in self._asked:
            return False
        if len(self._tasks) >= MAX_RUNNING + MAX_WAITING:
            log.warning("mixdown of %s not started: %d mixes waiting", folder, len(self._tasks))
            return False
        self._asked.add(folder)
        self.requested.append(folder)
        task = asyncio.create_task(self._run(folder), name=f"mix-{folder.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(self, folder: Path) -> None:
        async with self._slots:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self.command,
                    str(folder),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                )
            except OSError as exc:
                self.failed += 1
                log.warning("mixdown of %s could not start: %s", folder, exc)
                return
            try:
                _, err = await asyncio.wait_for(proc.communicate(), self.timeout)
            except TimeoutError:
                await _kill(proc)
                self.failed += 1
                log.warning("mixdown of %s killed after %.0f s", folder, self.timeout)
                return
            except asyncio.CancelledError:
                await _kill(proc)
                raise
            if proc.returncode != 0:
                self.failed += 1
                tail = err.decode(errors="replace").strip()[-300:]
                log.warning("mixdown of %s failed (exit %s): %s", folder, proc.returncode, tail)
            else:
                log.info("mixdown of %s done", folder)

    async def stop(self) -> None:
        """Kill running mixes and forget waiting ones (a restart does not redo them)."""
        await cancel_and_wait(*self._tasks)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
    await proc.wait()
