"""The SFU worker process: one control connection to a server, many peer connections.

A worker is its own process (one per core: everything here runs on one event loop
under the GIL). `Worker` is the whole brain and has no network code of its own: it
takes control frames through `handle()` and hands its outgoing frames to an `emit`
callback, so tests can drive it in-process with real aiortc peers. `main()` wraps it
in the WebSocket client that talks to the server's `/sfu/ws`.

Media contract (docs/architecture.md): a participant's offer carries `slots` recvonly
audio m-lines first (slot i is the i-th m-line), then, if it may publish, one sendonly
microphone m-line. Anything else is answered inactive; so is a microphone m-line of a
participant whose `canPublish` is false.

Net control (issue 12): the server's `floor` frame says, per room, who may be forwarded
(directed: the talkers; any room: not the muted), the time-out timer and the courtesy
tone. A publisher's packets are gated in its tap callback before slot selection and
level accounting (one attribute test per packet), so a non-talker cannot take or hold a
slot. Until a room's first floor frame it is open with nobody muted.

A room may span workers (issue 14, cascade.py): on its origin worker it is an ordinary
room whose forwarder also feeds every linked edge; on an edge worker (`Room.origin` set)
it has listeners only, and its slots are fed by the origin's streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any, Literal

import psutil
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.rtp import RtpPacket
from aiortc.sdp import candidate_from_sdp
from pydantic import ValidationError

from yahaml_voice.core.aio import cancel_and_wait, every
from yahaml_voice.core.config import SFU_TOKEN_ENV, Config
from yahaml_voice.core.protocol import (
    TO_WORKER_FRAMES,
    ErrorData,
    IceCandidate,
    JsonError,
    SessionDescription,
    SfuLinkState,
    SlotAssignment,
    ToWorkerAnnounce,
    ToWorkerCascadeLink,
    ToWorkerCascadeUnlink,
    ToWorkerFloor,
    ToWorkerParticipantLeft,
    ToWorkerRecord,
    ToWorkerRoomClosed,
    ToWorkerSignal,
    WorkerCascadeReady,
    WorkerCascadeReadyFrame,
    WorkerDraining,
    WorkerDrainingFrame,
    WorkerFrame,
    WorkerHello,
    WorkerHelloFrame,
    WorkerLinks,
    WorkerLinksFrame,
    WorkerLoad,
    WorkerLoadFrame,
    WorkerRoomState,
    WorkerRoomStateFrame,
    WorkerSignal,
    WorkerSignalFrame,
    WorkerSlots,
    WorkerSlotsFrame,
    WorkerTalker,
    WorkerTalkerFrame,
    control_error,
    describe,
    parse_json,
    wire,
)
from yahaml_voice.core.tokens import ice_config, issue_worker_token

from . import courtesy, native, talkers
from .aiortc_private import (
    drop_rtcp,
    gather_every_turn_url,
    guard_receive_path,
    keep_only_codec,
    make_sink,
    negotiated_layout,
    offered_direction,
    quiet_sender,
    restrict_ice_addresses,
    set_sender_ssrc,
    tap_receiver,
)
from .cascade import EdgeLink, EdgeReceiver
from .forwarder import Forwarder
from .icerestart import IceRestart, restart_credentials
from .parrot import Parrot
from .reclaim import Reclaimer
from .recording import Recording, RecordingWriter, RecordTap
from .slots import SlotSelector
from .talkers import Talker

logger = logging.getLogger(__name__)

# Hands a frame for the server to the control connection (or to a test).
Emit = Callable[[WorkerFrame], None]

TOKEN_ENV = SFU_TOKEN_ENV
# Set by the supervisor: the worker stops when its parent (the server) is gone.
PARENT_ENV = "YV_SFU_PARENT_PID"
# Slot selection runs this often; a speaker change shows up within one tick + hold.
TICK = 0.1
# After the server closed the control connection with 1012 (restarting): how long to
# retry without backoff (a restart, an upgrade, takes seconds).
RESTART_RETRY_WINDOW = 30.0
# A publisher "carries audio" (roomState.audioFrom) while its last packet is this recent.
AUDIO_FRESH = 2.0
# The room's links (who is not connected; WorkerLinks) are looked at, and reported when they
# changed, at most this often: a mass join is one frame a second, not one per state change.
LINKS_EVERY = 1.0
# A connection still being set up is reported only after this long: a healthy join
# (connected in a fraction of a second) sends nothing, however many join.
LINKS_GRACE = 2.0
LOAD_INTERVAL = 1.0
# A packet without the audio-level extension counts as speech at this level (-dBov).
DEFAULT_LEVEL = 40
MAX_QUEUED_SIGNALS = 64


class SignalError(Exception):
    """An offer or candidate the worker cannot use (logged; the client gets no answer)."""


def _resident_memory() -> int | None:
    """This process's resident memory (bytes), for the server's /metrics."""
    try:
        return int(psutil.Process().memory_info().rss)
    except psutil.Error:
        return None


def _opus_only(transceiver: RTCRtpTransceiver) -> int:
    """Keep only Opus (we forward, never transcode) and ask for in-band FEC."""
    pt = keep_only_codec(transceiver, "audio/opus", minptime=10, useinbandfec=1)
    if pt is not None:
        return pt
    raise SignalError("the offer has no Opus codec")


async def close_connection(pc: RTCPeerConnection) -> None:
    """pc.close(), also for a connection aiortc half-built from a bad offer.

    An offer aiortc only half-accepted (a BUNDLE group whose first mid is not in the
    offer) leaves transceivers without a transport, and aiortc's close() stops at the
    first (AttributeError), leaving the transports after it open (found by
    tests/test_fuzz.py with a mutated offer). Stop what exists instead.
    """
    try:
        await pc.close()
    except AttributeError:
        for transceiver in pc.getTransceivers():
            dtls = transceiver.receiver.transport
            if dtls is not None:
                with contextlib.suppress(Exception):
                    await dtls.stop()
                    await dtls.transport.stop()


class Peer:
    """One participant's peer connection to the worker."""

    def __init__(self, room: Room, participant_id: str) -> None:
        self.room = room
        self.id = participant_id
        self.callsign = ""
        self.can_publish = False
        self.pc: RTCPeerConnection | None = None
        self.slot_transceivers: list[tuple[int, RTCRtpTransceiver]] = []
        self.publishing = False
        self.last_audio = float("-inf")
        # The floor's verdict (talker / not muted), the one check per received packet;
        # `talker` is the time-out timer and over tracking (None: neither is on).
        self.allowed = room.allows(participant_id)
        self.talker: Talker | None = None
        self.apply_floor()
        self._inbox: asyncio.Queue[ToWorkerSignal] = asyncio.Queue(MAX_QUEUED_SIGNALS)
        self._task: asyncio.Task[None] | None = None
        self._pending_candidates: list[ToWorkerSignal] = []
        # An ICE restart in place (icerestart.py) and the task that re-points the outputs
        # once it found the new path.
        self._restart: IceRestart | None = None
        self._restarted: asyncio.Task[None] | None = None
        # A connection of this participant failed and none came up since: its retries
        # are reported `failed`, not `connecting` (WorkerLinks).
        self.failed_before = False
        # When the current connection attempt began (for LINKS_GRACE).
        self.attempt_at = time.monotonic()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def put(self, message: ToWorkerSignal) -> None:
        try:
            self._inbox.put_nowait(message)
        except asyncio.QueueFull:
            logger.warning("dropping signal from %s: too many queued", self.id)

    async def _run(self) -> None:
        while True:
            message = await self._inbox.get()
            try:
                if message.type == "offer":
                    await self._offer(message)
                elif message.type == "ice-candidate":
                    await self._candidate(message)
                else:
                    logger.info("ignoring %s from %s", message.type, self.id)
            except asyncio.CancelledError:
                raise
            except SignalError as exc:
                logger.warning("signal from %s in %s rejected: %s", self.id, self.room.id, exc)
                why = f"{message.type} from {self.id} in {self.room.id}: {exc}"[:300]
                self.room.worker.emit(control_error("signal_rejected", why))
            except Exception:
                logger.exception("signal from %s in %s failed", self.id, self.room.id)

    async def _offer(self, message: ToWorkerSignal) -> None:
        data = message.data
        if not isinstance(data, SessionDescription) or data.type != "offer" or not data.sdp:
            raise SignalError("offer without an SDP")
        sdp = data.sdp
        pc = self.pc
        can_publish = message.canPublish and self.room.origin is None
        if pc is not None and pc.connectionState == "connected" and can_publish == self.can_publish:
            credentials = restart_credentials(
                pc.remoteDescription.sdp if pc.remoteDescription else None, sdp
            )
            if credentials is not None:
                await self._restart_ice(pc, sdp, credentials)
                return
        await self._close_pc()  # any other offer means a new connection (new epoch)
        self.callsign = message.callsign
        # An edge forwards the origin's slots only: nobody publishes there.
        self.can_publish = message.canPublish and self.room.origin is None
        pc = self.pc = RTCPeerConnection(self.room.worker.rtc_configuration())
        self.attempt_at = time.monotonic()
        pc.on("connectionstatechange", lambda: self._state_changed(pc))
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            self._configure(pc)
            for queued in self._pending_candidates:
                with contextlib.suppress(SignalError):
                    await self._candidate(queued)
            self._pending_candidates.clear()
            # aiortc fails here too on offers it half-accepted (e.g. an m-line without a
            # direction: ValueError in createAnswer; found by tests/test_fuzz.py).
            await pc.setLocalDescription(await pc.createAnswer())
        except SignalError:
            await self._close_pc()
            raise
        except Exception as exc:  # aiortc raises various errors for offers it cannot use
            await self._close_pc()
            raise SignalError(f"unusable offer: {type(exc).__name__}: {exc}") from exc
        answer = SessionDescription(type="answer", sdp=pc.localDescription.sdp)
        self.room.worker.emit(
            WorkerSignalFrame(
                data=WorkerSignal(roomId=self.room.id, to=self.id, type="answer", data=answer)
            )
        )

    async def _restart_ice(
        self, pc: RTCPeerConnection, sdp: str, credentials: tuple[str, str]
    ) -> None:
        """The client restarted ICE (same m-lines, new ice-ufrag): a new path under the same
        connection. DTLS/SRTP, slots, floor, recording and the forwarder's outputs carry
        on; the outputs move to the new path once it is nominated (`_repoint`)."""
        await self._stop_restart()
        logger.info("%s in %s: ICE restart", self.id, self.room.id)
        try:
            servers = self.room.worker.rtc_configuration().iceServers
            restart = self._restart = await IceRestart.answering(pc, credentials, servers)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            for transceiver in pc.getTransceivers():
                if transceiver.kind == "audio":
                    _opus_only(transceiver)  # the same codec as negotiated first
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            await self._close_pc()
            if isinstance(exc, SignalError):
                raise
            raise SignalError(f"unusable restart offer: {type(exc).__name__}: {exc}") from exc
        restart.start()
        self._restarted = asyncio.get_running_loop().create_task(
            self._repoint_when_done(pc, restart)
        )
        answer = SessionDescription(type="answer", sdp=pc.localDescription.sdp)
        self.room.worker.emit(
            WorkerSignalFrame(
                data=WorkerSignal(roomId=self.room.id, to=self.id, type="answer", data=answer)
            )
        )

    async def _repoint_when_done(self, pc: RTCPeerConnection, restart: IceRestart) -> None:
        if await restart.done() and pc is self.pc and pc.connectionState == "connected":
            logger.info("%s in %s: ICE restarted", self.id, self.room.id)
            self._repoint(pc)

    def _repoint(self, pc: RTCPeerConnection) -> None:
        """Send each output on the new path (same output: numbering, counts, group)."""
        forwarder = self.room.forwarder
        if not self.publishing and self.slot_transceivers:
            drop_rtcp(self.slot_transceivers[0][1].sender.transport)
        for index, transceiver in self.slot_transceivers:
            sink = make_sink(transceiver.sender.transport, self.room.worker.send_tasks)
            if sink is None or not forwarder.repoint(self.id, index, sink):
                logger.warning("%s slot %d: no output to re-point", self.id, index)

    async def _stop_restart(self) -> None:
        restart, self._restart = self._restart, None
        task, self._restarted = self._restarted, None
        if restart is not None:
            await restart.stop()
        await cancel_and_wait(task)

    def _configure(self, pc: RTCPeerConnection) -> None:
        """Directions, codecs and taps for the m-lines of a fresh offer."""
        slots = self.room.forwarder.slots
        self.slot_transceivers = []
        publishing = False
        for index, transceiver in enumerate(pc.getTransceivers()):
            offered = offered_direction(transceiver)
            if transceiver.kind != "audio":
                transceiver.direction = "inactive"
                continue
            pt = _opus_only(transceiver)
            if index < len(slots) and offered in ("sendonly", "sendrecv"):
                transceiver.direction = "sendonly"
                sender = transceiver.sender
                set_sender_ssrc(sender, self.room.forwarder.ssrc(index))
                quiet_sender(sender)
                self.slot_transceivers.append((index, transceiver))
            elif (
                index >= len(slots)
                and offered in ("recvonly", "sendrecv")
                and self.can_publish
                and not publishing
            ):
                transceiver.direction = "recvonly"
                tap_receiver(transceiver.receiver, pt, self._on_packet)
                publishing = True
            else:
                if index >= len(slots) and not self.can_publish:
                    logger.info("%s may not publish: its send m-line is inactive", self.id)
                transceiver.direction = "inactive"
        self.publishing = publishing
        if publishing:
            self.room.selector.add(self.id)

    def apply_floor(self) -> None:
        """Follow the room's floor: may it be forwarded, and its time-out timer."""
        room = self.room
        floor = room.floor
        allowed = room.allows(self.id)
        if self.talker is not None and self.allowed and not allowed:
            self.talker.stopped()
        self.allowed = allowed
        if floor is None or not (floor.tot or floor.courtesy is not None):
            if self.talker is not None and self.talker.cut:
                room.report_talker(self.id, "reset")
            self.talker = None
            return
        tot = 0.0 if self.id in floor.exempt else floor.tot
        if self.talker is None:
            self.talker = Talker(tot, floor.totReset)
        elif self.talker.configure(tot, floor.totReset):
            room.report_talker(self.id, "reset")

    def _on_packet(self, packet: RtpPacket) -> None:
        now = time.monotonic()
        self.last_audio = now
        ext = packet.extensions.audio_level
        level = DEFAULT_LEVEL if ext is None else ext[1]
        talker = self.talker
        if not self.allowed:  # not a talker, or muted: it cannot take or hold a slot
            if talker is not None and talker.cut:
                talker.packet(level, now)  # a lockout ends only after real silence
            return
        if talker is not None:
            verdict = talker.packet(level, now)
            if verdict:
                if verdict == talkers.CUT:
                    logger.info("%s in %s: time-out timer cut", self.id, self.room.id)
                    self.room.report_talker(self.id, "cut")
                return
        parrot = self.room.parrot
        if parrot is not None:  # an echo test: kept for this publisher alone
            parrot.packet(self.id, packet, level, now)
            return
        self.room.selector.observe(self.id, level, now)
        self.room.forwarder.forward(self.id, packet)

    async def _candidate(self, message: ToWorkerSignal) -> None:
        if self.pc is None or self.pc.remoteDescription is None:
            if len(self._pending_candidates) < MAX_QUEUED_SIGNALS:
                self._pending_candidates.append(message)
            return
        data = message.data
        if not isinstance(data, IceCandidate) or not data.candidate:
            return  # end of candidates
        line = data.candidate
        try:
            candidate = candidate_from_sdp(line.split(":", 1)[1] if ":" in line else line)
        except (ValueError, IndexError) as exc:
            raise SignalError(f"bad candidate {line!r}") from exc
        candidate.sdpMid = data.sdpMid
        candidate.sdpMLineIndex = data.sdpMLineIndex
        if candidate.sdpMid is None and candidate.sdpMLineIndex is None:
            candidate.sdpMLineIndex = 0
        await self.pc.addIceCandidate(candidate)

    def link_state(self, now: float) -> SfuLinkState | None:
        """What WorkerLinks says about this peer: None while its connection is up (or
        still within LINKS_GRACE of this attempt: a normal join is never reported)."""
        pc = self.pc
        state = "new" if pc is None else pc.connectionState
        if state == "connected":
            return None
        if self.failed_before or state in ("failed", "closed"):
            return "failed"  # failed, closed, or retrying after a failure
        if now - self.attempt_at < LINKS_GRACE:
            return None
        return "connecting" if state == "connecting" else "new"

    def _state_changed(self, pc: RTCPeerConnection) -> None:
        if pc is not self.pc:
            return
        state = pc.connectionState
        logger.info("%s in %s: connection %s", self.id, self.room.id, state)
        if state == "connected":
            self.failed_before = False
            self._attach(pc)
        elif state in ("failed", "closed"):
            self.failed_before = self.failed_before or state == "failed"
            self._detach()

    def _attach(self, pc: RTCPeerConnection) -> None:
        forwarder = self.room.forwarder
        if not self.publishing and self.slot_transceivers:
            # A listener's RTCP is only reports about what we send it: dropped unparsed.
            drop_rtcp(self.slot_transceivers[0][1].sender.transport)
        for index, transceiver in self.slot_transceivers:
            sink = make_sink(transceiver.sender.transport, self.room.worker.send_tasks)
            if sink is None:
                logger.warning("%s slot %d: transport not ready", self.id, index)
                continue
            layout = forwarder.layout(*negotiated_layout(transceiver), transceiver.mid)
            forwarder.add_output(self.id, index, layout, sink, transceiver.sender)
        # The newcomer needs the current mapping; the server broadcasts it to the room,
        # so joins are coalesced into at most one announcement per tick.
        self.room.announce_pending = True

    def _detach(self) -> None:
        self.room.forwarder.remove_subscriber(self.id)
        if self.publishing:
            self.room.selector.remove(self.id)
            self.publishing = False
            self.room.apply_slots()

    async def _close_pc(self) -> None:
        await self._stop_restart()
        pc, self.pc = self.pc, None
        self._detach()
        if pc is not None:
            await close_connection(pc)
            self.room.worker.reclaimer.closed()

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self._close_pc()


class Room:
    """One room placed on this worker: its peers, slots and forwarder."""

    def __init__(
        self, worker: Worker, room_id: str, origin: str | None = None, parrot: bool = False
    ) -> None:
        self.worker = worker
        self.id = room_id
        sfu = worker.config.sfu
        self.forwarder = Forwarder(sfu.slots, worker.fanout)
        # Set on an edge worker: the worker holding the room's publishers, whose slot
        # streams `edge` receives. On the origin, `links` are the edges it feeds.
        self.origin = origin
        self.edge: EdgeReceiver | None = (
            EdgeReceiver(self.forwarder, sfu.cascade_host) if origin is not None else None
        )
        self.links: dict[str, EdgeLink] = {}
        self.selector = SlotSelector(sfu.slots, float(sfu.slot_hold))
        self.peers: dict[str, Peer] = {}
        self._task: asyncio.Task[None] | None = None
        self._audio_from: list[str] = []
        # Peers whose connection is not up, as last reported (WorkerLinks).
        self.links_down: dict[str, SfuLinkState] = {}
        self.links_newcomer = False
        self._links_at = float("-inf")
        self.announce_pending = False
        # Net control (issue 12): None until the first floor frame (open, nobody muted).
        self.floor: ToWorkerFloor | None = None
        self._talkers: frozenset[str] = frozenset()
        self._muted: frozenset[str] = frozenset()
        self._tone: courtesy.Tone | None = None
        # Slots playing a courtesy tone (the selector's mapping waits for them).
        self._tones: dict[int, asyncio.Task[None]] = {}
        # The recording on the origin (issue 15; recording.py); edges never record.
        self.recording: Recording | None = None
        # A parrot room (parrot.py): each publisher hears itself, after it stops; nobody
        # else hears anybody.
        self.parrot: Parrot | None = (
            Parrot(self.forwarder, float(worker.config.recording.parrot_max))
            if parrot and origin is None
            else None
        )
        floor = worker.floors.get(room_id)
        if floor is not None:
            self.set_floor(floor)

    async def start(self) -> None:
        self.forwarder.start()
        ticks = every(TICK, self._tick, what=f"room {self.id} tick", log=logger, wait_first=True)
        self._task = asyncio.get_running_loop().create_task(ticks)
        if self.edge is not None:
            await self.edge.start()
            assert self.origin is not None
            ready = WorkerCascadeReady(
                roomId=self.id,
                origin=self.origin,
                host=self.edge.host,
                ports=self.edge.ports,
                key=self.edge.key_text,
            )
            self.worker.emit(WorkerCascadeReadyFrame(data=ready))
        else:
            for link in self.worker.links.get(self.id, {}).values():
                self.link(link)
            record = self.worker.records.get(self.id)
            if record is not None:
                self.record(record)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task, *self._tones.values())
        self._tones.clear()
        if self.parrot is not None:
            await self.parrot.stop()
        if self.recording is not None:
            # The writer thread closes the files and says `stopped`; Worker.stop waits
            # for it, a room that closes on a running worker need not.
            self.recording.stop()
        for peer in list(self.peers.values()):
            await peer.close()
        self.peers.clear()
        for edge in list(self.links):
            self.unlink(edge)
        if self.edge is not None:
            await self.edge.stop()
        await self.forwarder.stop()

    def link(self, message: ToWorkerCascadeLink) -> None:
        """Feed an edge worker (replacing an older link to it)."""
        self.unlink(message.edge)
        self.links[message.edge] = EdgeLink(
            self.forwarder, message.edge, message.host, message.ports, message.key
        )
        logger.info(
            "room %s: feeding edge %s at %s (%s)",
            self.id,
            message.edge,
            message.host,
            "SRTP" if message.key else "plain RTP",
        )

    def record(self, message: ToWorkerRecord) -> None:
        """Start recording as `recordingId` (the same id goes on; another one replaces the
        current recording), or stop (null)."""
        if self.origin is not None:
            return  # an edge forwards the origin's slots: the origin records them
        current = self.recording
        if current is not None and current.id == message.recordingId:
            return
        if current is not None:
            current.stop()
            self.recording = None
        if message.recordingId is None:
            return
        config = self.worker.config.recording
        recording = self.recording = Recording(
            directory=os.path.abspath(config.dir),
            room_id=self.id,
            recording_id=message.recordingId,
            net_id=message.netId,
            slots=len(self.forwarder.slots),
            limit=config.queue,
            callsign_of=self._callsign,
            emit=self.worker.emit,
            detach=self._detach_recording,
        )
        self.forwarder.recording = recording.tap
        self.worker.recorder.add(recording)

    def _callsign(self, participant_id: str) -> str:
        """A peer's callsign (called from the recording writer thread: one dict read)."""
        peer = self.peers.get(participant_id)
        return peer.callsign if peer is not None else ""

    def _detach_recording(self, tap: RecordTap) -> None:
        if self.forwarder.recording is tap:
            self.forwarder.recording = None

    def unlink(self, edge: str) -> None:
        link = self.links.pop(edge, None)
        if link is not None:
            link.close()

    def peer(self, participant_id: str) -> Peer:
        peer = self.peers.get(participant_id)
        if peer is None:
            peer = self.peers[participant_id] = Peer(self, participant_id)
            peer.start()
            # A newcomer's page has not heard the current links: the next look repeats
            # them (if any) even when its own connection came up before that look.
            self.links_newcomer = True
        return peer

    async def remove(self, participant_id: str) -> None:
        if self.parrot is not None:
            self.parrot.remove(participant_id)
        peer = self.peers.pop(participant_id, None)
        if peer is not None:
            await peer.close()

    # ------------------------------------------------------------ net control

    def set_floor(self, floor: ToWorkerFloor) -> None:
        """Who may be forwarded, the time-out timer and the courtesy tone, from now on."""
        self.floor = floor
        self._talkers = frozenset(floor.talkers)
        self._muted = frozenset(floor.muted)
        tone = floor.courtesy
        self._tone = self.worker.tones.get(tone.hz, tone.ms) if tone is not None else None
        for peer in self.peers.values():
            peer.apply_floor()

    def allows(self, participant_id: str) -> bool:
        """May this publisher's packets be forwarded (talker in a directed room, not muted)?"""
        floor = self.floor
        if floor is None:
            return True
        if participant_id in self._muted:
            return False
        return not floor.directed or participant_id in self._talkers

    def report_talker(self, participant_id: str, state: Literal["cut", "reset"]) -> None:
        talker = WorkerTalker(roomId=self.id, participantId=participant_id, state=state)
        self.worker.emit(WorkerTalkerFrame(data=talker))

    def _tick_talkers(self, now: float) -> None:
        for peer in self.peers.values():
            talker = peer.talker
            if talker is None:
                continue
            event = talker.tick(now)
            if event == talkers.RESET:
                logger.info("%s in %s: time-out lockout over", peer.id, self.id)
                self.report_talker(peer.id, "reset")
            elif event == talkers.UNKEYED and peer.allowed:
                self._courtesy(peer.id)

    def _courtesy(self, participant_id: str) -> None:
        """Play the courtesy tone in the slot the unkeying talker occupies (if any)."""
        tone = self._tone
        index = self.selector.slot_of(participant_id)
        if tone is None or index is None or index in self._tones:
            return
        source = f"\0courtesy{index}"  # never a participant id
        task = asyncio.get_running_loop().create_task(
            courtesy.play(self.forwarder, index, source, tone)
        )
        self._tones[index] = task
        task.add_done_callback(self._tone_done)

    def _tone_done(self, task: asyncio.Task[None]) -> None:
        """Give the slot back to the selector's choice (unless the room is stopping)."""
        if not task.cancelled() and task.exception() is not None:
            logger.error("courtesy tone in %s failed", self.id, exc_info=task.exception())
        index = next((i for i, t in self._tones.items() if t is task), None)
        if index is None:
            return
        del self._tones[index]
        if self._task is not None:
            self.forwarder.set_source(index, self.selector.slots[index])

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._links_at >= LINKS_EVERY:
            self._links_at = now
            self._check_links(now)
        if self.origin is not None:
            return  # an edge: the origin picks and announces the slots
        if self.floor is not None:
            self._tick_talkers(now)
        if self.parrot is not None:
            self.parrot.tick(now)
        if self.selector.update(now):
            self.apply_slots()
        elif self.announce_pending and (any(self.selector.slots) or self.selector.speaking):
            self.announce_slots()
        self.announce_pending = False
        audio_from = sorted(p.id for p in self.peers.values() if now - p.last_audio < AUDIO_FRESH)
        if audio_from != self._audio_from:
            self._audio_from = audio_from
            self.report_state()

    def _check_links(self, now: float) -> None:
        """Report the peers whose connection is not up, when that changed (edges too: each
        worker speaks for its own peers)."""
        links: dict[str, SfuLinkState] = {}
        for peer in self.peers.values():
            state = peer.link_state(now)
            if state is not None:
                links[peer.id] = state
        newcomer, self.links_newcomer = self.links_newcomer, False
        if links != self.links_down or (newcomer and links):
            self.links_down = links
            self.report_links()

    def report_links(self) -> None:
        data = WorkerLinks(roomId=self.id, notConnected=dict(sorted(self.links_down.items())))
        self.worker.emit(WorkerLinksFrame(data=data))

    def report_state(self) -> None:
        """roomState: the server answers roomClosed if the room is no longer ours."""
        state = WorkerRoomState(roomId=self.id, audioFrom=self._audio_from)
        self.worker.emit(WorkerRoomStateFrame(data=state))

    def apply_slots(self) -> None:
        """Push the selector's mapping into the forwarder and tell the server."""
        for index, participant_id in enumerate(self.selector.slots):
            if index not in self._tones:  # a courtesy tone gives the slot back when done
                self.forwarder.set_source(index, participant_id)
        self.announce_slots()

    def announce_slots(self) -> None:
        self.announce_pending = False
        slots = [
            SlotAssignment(index=i, participantId=pid) for i, pid in enumerate(self.selector.slots)
        ]
        data = WorkerSlots(roomId=self.id, slots=slots, speaking=list(self.selector.speaking))
        self.worker.emit(WorkerSlotsFrame(data=data))

    @property
    def stream_count(self) -> int:
        return self.forwarder.output_count


class Worker:
    """Rooms, peers and the control protocol of one worker process (no network code)."""

    def __init__(self, config: Config, worker_id: str, emit: Emit) -> None:
        self.config = config
        self.id = worker_id
        self.emit = emit
        self.rooms: dict[str, Room] = {}
        self.send_tasks: set[asyncio.Task[None]] = set()
        self._cpu_mark = (time.monotonic(), time.process_time())
        self.reclaimer = Reclaimer()
        # The last floor frame of each room: rooms may be placed before their first peer,
        # and one that empties out here keeps its floor (fail closed) until the server
        # sends a new one or roomClosed.
        self.floors: dict[str, ToWorkerFloor] = {}
        # The edges each room feeds, kept like floors: an origin room that empties out and
        # opens again feeds them again.
        self.links: dict[str, dict[str, ToWorkerCascadeLink]] = {}
        self.tones = courtesy.Tones()
        # The last record frame of each room, kept like floors (the room may be placed
        # before its first peer), and the one writer thread of every recording here.
        self.records: dict[str, ToWorkerRecord] = {}
        self.recorder = RecordingWriter()
        # Draining (SIGTERM): set by start_drain(); `drained` once no room is left here.
        self.draining = False
        self.drained = asyncio.Event()
        guard_receive_path()
        gather_every_turn_url()
        self.fanout = native.load(config.sfu.native)
        logger.info(
            "worker %s: %s fan-out", worker_id, "native" if self.fanout is not None else "Python"
        )

    def hello(self) -> WorkerHelloFrame:
        hello = WorkerHello(
            workerId=self.id,
            slots=self.config.sfu.slots,
            pid=os.getpid(),
            host=socket.gethostname(),
        )
        return WorkerHelloFrame(data=hello)

    def start_drain(self, timeout: float) -> None:
        """Tell the server to move this worker's rooms away (sent again after each hello)."""
        self.draining = True
        self.emit(WorkerDrainingFrame(data=WorkerDraining(timeout=timeout)))
        self._check_drained()

    def _check_drained(self) -> None:
        if self.draining and not self.rooms:
            self.drained.set()

    def report_rooms(self) -> None:
        """roomState for every room, after the hello of each (re)connect: rooms re-placed
        while the control connection was down are closed on the server's answer."""
        for room in self.rooms.values():
            room.report_state()
            if room.links_down:
                room.report_links()

    def load(self) -> WorkerLoad:
        """Load since the previous call; `cpu` is the share of one core (0..1+)."""
        wall, cpu = time.monotonic(), time.process_time()
        last_wall, last_cpu = self._cpu_mark
        self._cpu_mark = (wall, cpu)
        share = (cpu - last_cpu) / (wall - last_wall) if wall > last_wall else 0.0
        return WorkerLoad(
            rooms=len(self.rooms),
            peers=sum(len(r.peers) for r in self.rooms.values()),
            streams=sum(r.stream_count for r in self.rooms.values()),
            cpu=round(max(share, 0.0), 4),
            fanout="native" if self.fanout is not None else "python",
            rss=_resident_memory(),
        )

    def rtc_configuration(self) -> RTCConfiguration:
        servers: list[RTCIceServer] = []
        if self.config.sfu.use_turn and self.config.ice.turn.urls:
            for server in ice_config(self.config, self.id).iceServers:
                servers.append(
                    RTCIceServer(
                        urls=server.urls, username=server.username, credential=server.credential
                    )
                )
        return RTCConfiguration(iceServers=servers)

    async def handle(self, frame: str | bytes | dict[str, Any]) -> None:
        """Validate and apply one server frame; a bad frame is logged and answered with an
        `error` frame, never raised."""
        try:
            if isinstance(frame, str | bytes):
                frame = parse_json(frame)
            if not isinstance(frame, dict):
                raise ValueError("a frame must be a JSON object")
            kind, data = frame.get("type"), frame.get("data")
            if kind == "error":
                try:
                    error = ErrorData.model_validate(data)
                    logger.warning("server error %s: %s", error.code, error.message)
                except ValidationError:
                    logger.warning("malformed error frame from server: %.200s", data)
                return
            model = TO_WORKER_FRAMES.get(kind) if isinstance(kind, str) else None
            if model is None:
                raise ValueError(f"unknown frame type {kind!r}")
            message = model.model_validate(data)
        except (ValueError, ValidationError) as exc:  # JsonError is a ValueError
            if isinstance(exc, ValidationError):
                code, reason = "bad_frame", describe(exc, root="data")
            elif isinstance(exc, JsonError):
                code, reason = exc.code, exc.message
            else:
                code, reason = "bad_frame", (str(exc) or "?").splitlines()[0]
            logger.warning("ignoring bad frame from server: %s", reason)
            # Tell the server too (it logs it; neither side answers an error frame).
            self.emit(control_error(code, reason))
            return
        try:
            if isinstance(message, ToWorkerSignal):
                room = self.rooms.get(message.roomId)
                if room is not None and room.origin != message.origin:
                    # The room moved between origin and edge roles here: start it afresh.
                    await self._close_room(message.roomId)
                    room = None
                if room is None:
                    room = Room(self, message.roomId, message.origin, message.parrot)
                    try:
                        await room.start()
                    except OSError:
                        await room.stop()
                        raise
                    self.rooms[message.roomId] = room
                room.peer(message.from_).put(message)
            elif isinstance(message, ToWorkerParticipantLeft):
                logger.info(
                    "%s left %s (%s)", message.participantId, message.roomId, message.reason
                )
                room = self.rooms.get(message.roomId)
                if room is not None:
                    await room.remove(message.participantId)
                    if not room.peers:
                        await self._close_room(message.roomId)
            elif isinstance(message, ToWorkerRecord):
                if message.recordingId is None:
                    self.records.pop(message.roomId, None)
                else:
                    self.records[message.roomId] = message
                room = self.rooms.get(message.roomId)
                if room is not None:
                    room.record(message)
            elif isinstance(message, ToWorkerRoomClosed):
                self.records.pop(message.roomId, None)
                self.floors.pop(message.roomId, None)
                self.links.pop(message.roomId, None)
                await self._close_room(message.roomId)
            elif isinstance(message, ToWorkerCascadeLink):
                self.links.setdefault(message.roomId, {})[message.edge] = message
                room = self.rooms.get(message.roomId)
                if room is not None and room.origin is None:
                    room.link(message)
            elif isinstance(message, ToWorkerCascadeUnlink):
                self.links.get(message.roomId, {}).pop(message.edge, None)
                room = self.rooms.get(message.roomId)
                if room is not None:
                    room.unlink(message.edge)
            elif isinstance(message, ToWorkerAnnounce):
                room = self.rooms.get(message.roomId)
                if room is not None and room.origin is None:
                    room.announce_pending = True
            elif isinstance(message, ToWorkerFloor):
                self.floors[message.roomId] = message
                room = self.rooms.get(message.roomId)
                if room is not None:
                    room.set_floor(message)
        except Exception:
            logger.exception("handling %s failed", type(message).__name__)

    async def _close_room(self, room_id: str) -> None:
        # Its recording stops with it (and says so); the server sends a new record frame
        # when the room is placed again, never the same id (recordings are not reopened).
        self.records.pop(room_id, None)
        room = self.rooms.pop(room_id, None)
        if room is not None:
            await room.stop()
        self._check_drained()

    async def stop(self) -> None:
        for room_id in list(self.rooms):
            await self._close_room(room_id)
        await cancel_and_wait(*self.send_tasks)
        await self.recorder.stop()
        await self.reclaimer.stop()


# ---------------------------------------------------------------- process entry point


def worker_url(config: Config, server_url: str | None) -> str:
    """The `/sfu/ws` URL from --server, sfu.server_url or the local server address."""
    base = (
        server_url or config.sfu.server_url or f"http://{config.server.host}:{config.server.port}"
    )
    base = base.rstrip("/")
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(http):
            base = ws + base[len(http) :]
    if not base.startswith(("ws://", "wss://")):
        base = "ws://" + base
    return base if base.endswith("/sfu/ws") else base + "/sfu/ws"


def worker_token(config: Config) -> str:
    token = os.environ.get(TOKEN_ENV)
    if token:
        return token
    return issue_worker_token(config)


async def serve(
    config: Config,
    url: str,
    worker_id: str,
    stop: asyncio.Event,
    reconnect_delay: float = 1.0,
    drain: asyncio.Event | None = None,
) -> None:
    """Stay connected to the server (reconnecting with backoff) until `stop` is set, or
    until the worker drained once `drain` is set (see _drain)."""
    import websockets
    from websockets.exceptions import WebSocketException

    outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=10000)

    def emit(frame: WorkerFrame) -> None:
        try:
            outbox.put_nowait(json.dumps(wire(frame)))
        except asyncio.QueueFull:
            logger.warning("control queue full: dropping %s", frame.type)

    worker = Worker(config, worker_id, emit)
    connected = asyncio.Event()
    drainer = asyncio.ensure_future(_drain(worker, drain, connected, stop)) if drain else None
    delay = reconnect_delay
    # Until then the server is restarting (it closed us with 1012): retry every
    # reconnect_delay, no backoff, so the worker is back before its registration (held
    # for server.grace_period by the stopping process) expires and its rooms move.
    restarting_until = 0.0
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                headers = {"Authorization": f"Bearer {worker_token(config)}"}
                # close_timeout: a stop (a second SIGTERM) never waits long for a server
                # that does not answer the closing handshake.
                async with websockets.connect(
                    url, additional_headers=headers, max_size=2**20, close_timeout=1.0
                ) as ws:
                    logger.info("worker %s connected to %s", worker_id, url)
                    await ws.send(json.dumps(wire(worker.hello())))
                    worker.report_rooms()
                    if worker.draining:
                        worker.start_drain(config.sfu.drain_timeout)
                    connected.set()
                    try:
                        await _session(ws, worker, outbox, stop)
                    finally:
                        connected.clear()
                        if ws.close_code == 1012:
                            restarting_until = time.monotonic() + RESTART_RETRY_WINDOW
            except (TimeoutError, OSError, WebSocketException) as exc:
                logger.warning("control connection to %s: %s", url, exc)
            if worker.draining:
                # The server re-places the rooms of a worker whose connection dropped
                # anyway: nothing left to wait for.
                logger.info("worker %s: control connection lost while draining", worker_id)
                stop.set()
            if stop.is_set():
                break
            if time.monotonic() - started > 30:
                delay = reconnect_delay
            if time.monotonic() < restarting_until:
                delay = reconnect_delay
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 15.0)
    finally:
        if drainer is not None:
            await cancel_and_wait(drainer)
        await worker.stop()


async def _drain(
    worker: Worker, drain: asyncio.Event, connected: asyncio.Event, stop: asyncio.Event
) -> None:
    """On `drain` (the first SIGTERM): ask the server to move the rooms away and set `stop`
    once none is left here, after sfu.drain_timeout at the latest, or at once when the
    control connection is down (the server re-places the rooms of a lost worker itself)."""
    await drain.wait()
    timeout = worker.config.sfu.drain_timeout
    started = time.monotonic()
    if not connected.is_set():
        logger.info("worker %s: SIGTERM while not connected: stopping", worker.id)
        stop.set()
        return
    logger.info(
        "worker %s draining: %d room(s) to move, %.0f s at most",
        worker.id,
        len(worker.rooms),
        timeout,
    )
    worker.start_drain(timeout)
    try:
        await asyncio.wait_for(worker.drained.wait(), timeout)
        logger.info("worker %s drained in %.3f s", worker.id, time.monotonic() - started)
    except TimeoutError:
        logger.warning(
            "worker %s: drain timeout (%.0f s): stopping with %d room(s)",
            worker.id,
            timeout,
            len(worker.rooms),
        )
    stop.set()


async def _session(
    ws: Any, worker: Worker, outbox: asyncio.Queue[str], stop: asyncio.Event
) -> None:
    async def reader() -> None:
        async for frame in ws:
            await worker.handle(frame)

    async def writer() -> None:
        while True:
            await ws.send(await outbox.get())

    parent = os.environ.get(PARENT_ENV)

    def heartbeat() -> None:
        worker.emit(WorkerLoadFrame(data=worker.load()))
        if parent and str(os.getppid()) != parent:
            logger.warning("parent process %s is gone: stopping", parent)
            stop.set()

    beats = every(LOAD_INTERVAL, heartbeat, what="load heartbeat", log=logger)
    tasks = [asyncio.ensure_future(c) for c in (reader(), writer(), beats, stop.wait())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        await cancel_and_wait(*tasks)


def main(config: Config, server_url: str | None = None, worker_id: str | None = None) -> int:
    """`yahaml-voice sfu`: run one worker until SIGTERM (drained first) or SIGINT (at once)."""
    logging.basicConfig(
        level=getattr(logging, config.server.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    restrict_ice_addresses(config.sfu.ice_addresses)
    worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
    url = worker_url(config, server_url)

    async def run() -> None:
        stop, drain = asyncio.Event(), asyncio.Event()

        def terminate() -> None:
            # The first SIGTERM drains, a second one stops at once.
            if drain.is_set():
                logger.warning("worker %s: second SIGTERM: stopping now", worker_id)
                stop.set()
            drain.set()

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, terminate)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await serve(config, url, worker_id, stop, drain=drain)

    asyncio.run(run())
    return 0
