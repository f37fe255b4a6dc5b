"""Choosing an SFU worker for a room.

Pure functions over the worker registry, so the rule can be tested without processes.
"""

from __future__ import annotations

from collections.abc import Iterable

from .store import WorkerRecord


def choose_worker(workers: Iterable[WorkerRecord]) -> WorkerRecord | None:
    """The least-loaded live worker that is not draining; ties go to the lowest id so
    placement is stable."""
    best: WorkerRecord | None = None
    for worker in workers:
        if worker.draining:
            continue
        if best is None or (worker.score, worker.id) < (best.score, best.id):
            best = worker
    return best
