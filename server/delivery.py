"""Where frames go: a bus channel per participant and per SFU worker, room broadcasts.

Nothing reaches a room but through its member list in the store, so a frame can never
leak into another room; a broadcast is one bus batch (one Redis round trip).
"""

from __future__ import annotations

from pydantic import BaseModel

from yahaml_voice.core.protocol import ServerFrame, ToWorkerFrame, wire

from .store import Bus, Store


def participant_channel(participant_id: str) -> str:
    return f"p:{participant_id}"


def worker_channel(worker_id: str) -> str:
    return f"w:{worker_id}"


class Delivery:
    def __init__(self, store: Store, bus: Bus) -> None:
        self.store = store
        self.bus = bus

    async def broadcast(self, room_id: str, frame: ServerFrame, exclude: str | None = None) -> int:
        """Send `frame` to every member of the room but `exclude`; how many it went to."""
        message = wire(frame)
        items = [
            (participant_channel(record.id), message)
            for record in await self.store.participants(room_id)
            if record.id != exclude
        ]
        await self.bus.publish_many(items)
        return len(items)

    async def to_participant(self, participant_id: str, frame: BaseModel) -> None:
        """A frame for one participant's sockets, on whichever process holds them (a
        ServerFrame, or a notice between processes such as RevokeNotice)."""
        await self.bus.publish(participant_channel(participant_id), wire(frame))

    async def to_worker(self, worker_id: str, frame: ToWorkerFrame) -> None:
        await self.bus.publish(worker_channel(worker_id), wire(frame))
