"""Which SFU worker a participant's connection goes to when a room spans workers.

One worker process fans a packet out to a few hundred listeners per core; a bigger net
spans workers (issue 14, sfu/cascade.py). Publishers always go to the room's origin
worker, where the speaker slots are picked. Listeners fill the origin, then its edges in
the order they were added, up to `sfu.max_listeners_per_worker` each, and keep their
worker on every later offer while it is still one of the room's. Pure functions over
the records, so the rule can be tested without processes.

The count is of the records the store holds, so two server processes placing at the
same instant may put one listener more than the cap on a worker: the cap is a placement
target, not an admission limit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from .store import ParticipantRecord, RoomState

# assign()'s answer when every worker of the room is full: add an edge.
NEW_EDGE = ""


def assign(
    state: RoomState, records: Iterable[ParticipantRecord], participant: ParticipantRecord, cap: int
) -> str:
    """The worker for `participant`'s connection, or NEW_EDGE when the room needs one more."""
    workers = state.workers
    assert workers, "the room is not on an SFU worker"
    if participant.can_publish or cap <= 0:
        return workers[0]
    if participant.sfu_worker in workers:
        return participant.sfu_worker
    load = Counter(
        r.sfu_worker for r in records if r.id != participant.id and r.sfu_worker in workers
    )
    for worker in workers:
        if load[worker] < cap:
            return worker
    return NEW_EDGE


def least_loaded(state: RoomState, records: Iterable[ParticipantRecord]) -> str:
    """Where a listener goes when no worker can be added: the room's emptiest worker."""
    workers = state.workers
    load = Counter(r.sfu_worker for r in records if r.sfu_worker in workers)
    return min(workers, key=lambda w: (load[w], workers.index(w)))


def routed_to(state: RoomState, participant: ParticipantRecord) -> str | None:
    """Where the participant's candidates and departure go: its worker if still the room's,
    else the origin (None in mesh mode)."""
    workers = state.workers
    if not workers:
        return None
    return participant.sfu_worker if participant.sfu_worker in workers else workers[0]
