"""asyncio idioms every long-running object here shares: a lifetime (Service), a
periodic loop that survives its own failures (every), and stopping tasks (cancel_and_wait)."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any, Protocol

_log = logging.getLogger(__name__)


class Service(Protocol):
    """Something with a lifetime: `start()` creates its tasks, `stop()` cancels and awaits them."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def every(
    interval: float,
    fn: Callable[[], object],
    *,
    what: str,
    log: logging.Logger | None = None,
    quiet: tuple[type[Exception], ...] = (),
    wait_first: bool = False,
) -> None:
    """Call `fn` (sync or async), then sleep `interval` seconds, until cancelled.

    A failure of one call never ends the loop: it is logged (with its traceback, or as
    one warning line for the `quiet` kinds, e.g. a store that is restarting) and the next
    call comes on time. `wait_first` sleeps before the first call too."""
    log = log or _log
    if wait_first:
        await asyncio.sleep(interval)
    while True:
        try:
            result = fn()
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except quiet as exc:
            log.warning("%s skipped: %s", what, exc)
        except Exception:
            log.exception("%s failed; retrying", what)
        await asyncio.sleep(interval)


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel `tasks` (None is skipped) and wait until every one has ended.

    How a task ended (its cancellation, or an exception it raised before) is not the
    caller's concern: an exception is logged at debug level. A cancellation of the caller
    itself is not swallowed (as `with suppress(CancelledError): await task` would): it
    reaches the tasks too and propagates once they have ended."""
    live = [task for task in tasks if task is not None]
    for task in live:
        task.cancel()
    results = await asyncio.gather(*live, return_exceptions=True)
    for task, result in zip(live, results, strict=True):
        if isinstance(result, Exception):
            _log.debug("task %r ended with %r", task, result)
