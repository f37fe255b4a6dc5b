"""When a room is recorded, and who hears about it (docs/protocol.md "Recording").

The origin SFU worker writes the files (it has the packets); this service decides when it
records and tells everyone. A `record: true` room records whenever it is in use: from its
placement on a worker (or its first join, for a room left on its worker while empty)
until it leaves that worker or empties. A `record: ncs` room records between net
control's start and stop (and also stops when it leaves its worker or empties).

The room's latest recording is a document in the store (RecordingDoc, compare-and-set on
its version), so every server process agrees and a second start is refused whichever
process it reaches. Each change is sent to the worker that records (`record`), broadcast
to the room (`recordingChanged`) and written into the open net's log (RecordingObserver).
Frames about a recording are accepted only from the worker it was started on; when that
worker reports it stopped or failed, the mix is rendered in a separate process
(mixdown.py). A periodic task prunes old recordings (recording_files.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from yahaml_voice.core.aio import cancel_and_wait, every
from yahaml_voice.core.config import Config, RoomConfig
from yahaml_voice.core.protocol import (
    RecordingChangedData,
    RecordingChangedFrame,
    RecordingState,
    ToWorkerRecord,
    ToWorkerRecordFrame,
    Transmission,
    TransmissionRecordedData,
    TransmissionRecordedFrame,
    WorkerRecording,
    WorkerTransmission,
)
from yahaml_voice.core.timestamps import iso

from .delivery import Delivery
from .errors import ApiError
from .mixdown import Mixer
from .netlog_store import NetLogStore
from .recording_files import RecordingFiles, new_id, started_at
from .store import RecordingDoc, Store, StoreError, StoreUnavailable

log = logging.getLogger(__name__)

CAS_RETRIES = 8
# How often old recordings are pruned (and once at start).
PRUNE_INTERVAL = 3600.0


class RecordingObserver(Protocol):
    """Told after a recording started, stopped or failed (the net log writes a line)."""

    async def recording_changed(
        self, room: RoomConfig, recording: RecordingState, by: str | None
    ) -> None: ...


def transmission_url(room_id: str, recording_id: str, index: int) -> str:
    return f"/api/voice-rooms/{room_id}/recordings/{recording_id}/transmissions/{index}"


def to_wire(room_id: str, doc: RecordingDoc) -> RecordingState:
    return RecordingState(
        id=doc.id,
        roomId=room_id,
        state=doc.state,  # type: ignore[arg-type]
        startedAt=iso(doc.started_at),
        endedAt=iso(doc.ended_at) if doc.ended_at is not None else None,
        reason=doc.reason,
        netId=doc.net_id,
    )


class RecordingService:
    def __init__(
        self,
        config: Config,
        store: Store,
        delivery: Delivery,
        nets: NetLogStore,
        mixer: Mixer | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.delivery = delivery
        self.nets = nets
        self.files = RecordingFiles(Path(config.recording.dir))
        self.mixer = mixer or Mixer()
        self.observer: RecordingObserver | None = None
        # Random tags of new ids (tests make them predictable).
        self.tag: Callable[[], str] = lambda: secrets.token_hex(3)
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._pruner: asyncio.Task[None] | None = None

    # lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        if self._pruner is None and any(room.record for room in self.config.rooms):
            self._pruner = asyncio.create_task(
                every(
                    PRUNE_INTERVAL,
                    self.prune,
                    what="recording retention",
                    log=log,
                    quiet=(StoreUnavailable,),
                ),
                name="recording-retention",
            )

    async def stop(self) -> None:
        await cancel_and_wait(self._pruner)
        self._pruner = None
        await self.mixer.stop()

    async def prune(self) -> list[tuple[str, str]]:
        """Apply recording.keep and recording.max_bytes now; (room, id) of what went."""
        running = []
        for room in self.config.rooms:
            doc = await self.store.recording(room.id) if room.record else None
            if doc is not None and doc.state == "recording":
                running.append((room.id, doc.id))
        rec = self.config.recording
        deleted = await asyncio.to_thread(
            self.files.prune, time.time(), rec.keep, rec.max_bytes, running
        )
        return [(item.room_id, item.recording_id) for item in deleted]

    # reading -----------------------------------------------------------------------------
    async def current(self, room_id: str) -> RecordingState | None:
        """The room's recording if one runs now."""
        doc = await self.store.recording(room_id)
        return to_wire(room_id, doc) if doc is not None and doc.state == "recording" else None

    async def listed(self, room_id: str) -> list[RecordingState]:
        """The room's recordings, newest first: those on disk (their index.json says how
        they ended) and the latest one from the store."""
        doc = await self.store.recording(room_id)
        ids = await asyncio.to_thread(self.files.ids, room_id)
        found: dict[str, RecordingState] = {}
        for recording_id in ids[:200]:
            found[recording_id] = await asyncio.to_thread(self._from_disk, room_id, recording_id)
        if doc is not None:
            found[doc.id] = to_wire(room_id, doc)
        return [found[k] for k in sorted(found, reverse=True)]

    def _from_disk(self, room_id: str, recording_id: str) -> RecordingState:
        index = self.files.index(room_id, recording_id) or {}
        raw = index.get("recording")
        if isinstance(raw, dict):
            try:
                return RecordingState.model_validate({**raw, "id": recording_id, "roomId": room_id})
            except ValueError:
                pass
        return RecordingState(
            id=recording_id,
            roomId=room_id,
            state="stopped",
            startedAt=iso(started_at(recording_id)),
        )

    def transmissions(self, room_id: str, recording_id: str) -> list[Transmission]:
        """The last recording.replay_last transmissions of a recording (from its index),
        oldest first, each with its replay url."""
        index = self.files.index(room_id, recording_id) or {}
        raw = index.get("transmissions")
        found: list[Transmission] = []
        for item in raw if isinstance(raw, list) else []:
            try:
                tx = Transmission.model_validate(item)
            except ValueError:
                continue
            found.append(
                tx.model_copy(update={"url": transmission_url(room_id, recording_id, tx.index)})
            )
        found.sort(key=lambda t: t.index)
        return found[-self.config.recording.replay_last :]

    # the write path ----------------------------------------------------------------------
    async def _change(
        self,
        room_id: str,
        rule: Callable[[RecordingDoc | None], RecordingDoc | None],
    ) -> tuple[RecordingDoc | None, RecordingDoc | None]:
        """read -> rule -> compare-and-set, retried; (old, new), new None: no change."""
        async with self._locks[room_id]:
            for _ in range(CAS_RETRIES):
                old = await self.store.recording(room_id)
                new = rule(old)
                if new is None:
                    return old, None
                new = dataclasses.replace(new, version=(old.version if old else 0) + 1)
                if await self.store.set_recording(room_id, new, old.version if old else 0):
                    return old, new
        raise StoreError(f"the recording of room {room_id} kept changing; gave up")

    async def _tell(
        self, room: RoomConfig, doc: RecordingDoc, by: str | None, worker: bool = True
    ) -> None:
        """The recording worker (`record`), every member, the net log."""
        if worker:
            running = doc.state == "recording"
            record = ToWorkerRecord(
                roomId=room.id, recordingId=doc.id if running else None, netId=doc.net_id
            )
            await self.delivery.to_worker(doc.worker_id, ToWorkerRecordFrame(data=record))
        state = to_wire(room.id, doc)
        frame = RecordingChangedFrame(data=RecordingChangedData(roomId=room.id, recording=state))
        await self.delivery.broadcast(room.id, frame)
        if self.observer is not None:
            try:
                await self.observer.recording_changed(room, state, by)
            except Exception as exc:  # the recording changed anyway; the log is second
                log.warning("net log not written: %s", exc)

    async def begin(
        self, room: RoomConfig, worker_id: str, by: str | None = None
    ) -> RecordingDoc | None:
        """Start recording on `worker_id` (None: one runs already)."""
        net = await self.nets.current(room.id)
        now = time.time()
        fresh = RecordingDoc(
            id=new_id(now, self.tag()),
            state="recording",
            started_at=now,
            worker_id=worker_id,
            net_id=net.id if net is not None else None,
        )

        def rule(doc: RecordingDoc | None) -> RecordingDoc | None:
            return None if doc is not None and doc.state == "recording" else fresh

        _, new = await self._change(room.id, rule)
        if new is not None:
            log.info("room=%s recording %s started on worker=%s", room.id, new.id, worker_id)
            await self._tell(room, new, by)
        return new

    async def end(
        self,
        room: RoomConfig,
        reason: str,
        by: str | None = None,
        *,
        state: str = "stopped",
        recording_id: str | None = None,
        worker: bool = True,
    ) -> RecordingDoc | None:
        """End the running recording (only `recording_id`, if given); None: none ran."""

        def rule(doc: RecordingDoc | None) -> RecordingDoc | None:
            if doc is None or doc.state != "recording":
                return None
            if recording_id is not None and doc.id != recording_id:
                return None
            return dataclasses.replace(doc, state=state, ended_at=time.time(), reason=reason)

        _, new = await self._change(room.id, rule)
        if new is not None:
            log.info("room=%s recording %s %s: %s", room.id, new.id, state, reason)
            await self._tell(room, new, by, worker=worker)
        return new

    # hooks of RoomService ----------------------------------------------------------------
    async def placed(self, room_id: str, worker_id: str) -> None:
        """The room landed on `worker_id`: a recording running elsewhere ends there (and
        goes on here, in a new recording); a `record: true` room in use starts one."""
        room = self.config.room(room_id)
        if room is None or not room.record:
            return
        doc = await self.store.recording(room_id)
        moved = doc is not None and doc.state == "recording" and doc.worker_id != worker_id
        if moved:
            await self.end(room, "the room moved to another SFU worker")
        if moved or (room.record is True and await self.store.count(room_id) > 0):
            await self.begin(room, worker_id)
        elif doc is not None and doc.state == "recording":
            await self._tell(room, doc, None)

    async def leaving(self, room_id: str, worker_id: str) -> None:
        """The room leaves its origin worker (to mesh, or to another worker)."""
        room = self.config.room(room_id)
        doc = await self.store.recording(room_id)
        if room is None or doc is None or doc.state != "recording" or doc.worker_id != worker_id:
            return
        await self.end(room, "the room left its SFU worker")

    async def joined(self, room: RoomConfig, worker_id: str | None) -> None:
        """A member joined: a `record: true` room kept on its worker while empty starts
        recording again."""
        if room.record is not True or not worker_id:
            return
        doc = await self.store.recording(room.id)
        if doc is None or doc.state != "recording":
            await self.begin(room, worker_id)

    async def emptied(self, room: RoomConfig) -> None:
        if room.record:
            await self.end(room, "the room is empty")

    async def reconcile(self, room_id: str, worker_id: str) -> None:
        """The origin reported the room (roomState): tell it again what to record (a
        worker back from an outage may have missed a `record`)."""
        room = self.config.room(room_id)
        if room is None or not room.record:
            return
        doc = await self.store.recording(room_id)
        running = doc is not None and doc.state == "recording" and doc.worker_id == worker_id
        if not running and room.record is True and await self.store.count(room_id) > 0:
            if doc is not None and doc.state == "recording":
                await self.end(room, "the room moved to another SFU worker")
            await self.begin(room, worker_id)
            return
        record = ToWorkerRecord(
            roomId=room_id,
            recordingId=doc.id if running and doc is not None else None,
            netId=doc.net_id if running and doc is not None else None,
        )
        await self.delivery.to_worker(worker_id, ToWorkerRecordFrame(data=record))

    # net control -------------------------------------------------------------------------
    async def start_by(self, room: RoomConfig, by: str) -> RecordingDoc:
        if room.record != "ncs":
            raise ApiError(409, "not_recordable", "net control cannot start or stop recording here")
        state = await self.store.room_state(room.id)
        if state.mode != "sfu" or not state.worker_id:
            raise ApiError(409, "not_placed", "the room is not on an SFU worker yet; retry shortly")
        started = await self.begin(room, state.worker_id, by)
        if started is None:
            raise ApiError(409, "already_recording", "this room is being recorded already")
        return started

    async def stop_by(self, room: RoomConfig, by: str) -> RecordingDoc:
        if room.record != "ncs":
            raise ApiError(409, "not_recordable", "net control cannot start or stop recording here")
        stopped = await self.end(room, f"stopped by net control {by}", by)
        if stopped is None:
            raise ApiError(409, "not_recording", "this room is not being recorded")
        return stopped

    # frames of the recording worker ------------------------------------------------------
    async def _ours(self, worker_id: str, room_id: str, recording_id: str) -> RecordingDoc | None:
        """The room's recording if `recording_id` is it and `worker_id` records it."""
        doc = await self.store.recording(room_id)
        if doc is None or doc.id != recording_id or doc.worker_id != worker_id:
            log.info(
                "room=%s: worker %s reports recording %s it does not hold; ignored",
                room_id,
                worker_id,
                recording_id,
            )
            return None
        return doc

    async def worker_recording(self, worker_id: str, message: WorkerRecording) -> None:
        room = self.config.room(message.roomId)
        if room is None:
            return
        doc = await self._ours(worker_id, room.id, message.recordingId)
        if doc is None:
            return
        if message.state == "recording":
            if doc.state != "recording":  # stopped meanwhile: say so again
                stop = ToWorkerRecord(roomId=room.id, recordingId=None)
                await self.delivery.to_worker(worker_id, ToWorkerRecordFrame(data=stop))
            return
        reason = message.reason or (
            "the worker stopped recording" if message.state == "stopped" else "failed"
        )
        await self.end(room, reason, state=message.state, recording_id=doc.id, worker=False)
        folder = self.files.recording_dir(room.id, doc.id)
        if folder is not None:
            self.mixer.request(folder)
        else:
            log.warning("room=%s recording %s: no directory to mix", room.id, doc.id)

    async def worker_transmission(self, worker_id: str, message: WorkerTransmission) -> None:
        room = self.config.room(message.roomId)
        if room is None or await self._ours(worker_id, room.id, message.recordingId) is None:
            return
        tx = message.transmission.model_copy(
            update={
                "url": transmission_url(room.id, message.recordingId, message.transmission.index)
            }
        )
        data = TransmissionRecordedData(
            roomId=room.id, recordingId=message.recordingId, transmission=tx
        )
        await self.delivery.broadcast(room.id, TransmissionRecordedFrame(data=data))
