"""ICE restart in place: a new network path under the same peer connection.

A phone that moves from Wi-Fi to mobile data gets a new address; its client restarts
ICE (`restartIce()`: an offer with a new ice-ufrag/pwd and the same m-lines) instead of
building a new connection, so the DTLS/SRTP session, the SFU's slots and everything
keyed to the connection survive. aiortc 1.16 cannot do that (its ICE transport starts
once); `IceRestart` does it on aioice's Connection (the private parts are in
aiortc_private.py). Used by the SFU worker (answering) and tests/voiceclient.py (both
sides, mesh and SFU).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiortc import RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiortc_sdp

from yahaml_voice.core.aio import cancel_and_wait

from .aiortc_private import (
    RESTART_TIMEOUT,
    RestartState,
    begin_ice_restart,
    run_ice_restart,
    set_remote_ice,
)

# (kind, mid, ice-ufrag, ice-pwd, DTLS fingerprints) of each m-line.
MediaIce = tuple[str, str | None, str | None, str | None, frozenset[str]]


def media_ice(sdp: str) -> list[MediaIce]:
    """The m-lines of an SDP with their ICE credentials and DTLS fingerprints (session-level
    ones applied)."""
    description = aiortc_sdp.SessionDescription.parse(sdp)
    found: list[MediaIce] = []
    for m in description.media:
        ice, dtls = m.ice, m.dtls
        prints = frozenset(
            f"{f.algorithm.lower()} {f.value.upper()}" for f in (dtls.fingerprints if dtls else [])
        )
        ufrag, pwd = (ice.usernameFragment, ice.password) if ice else (None, None)
        found.append((m.kind, m.rtp.muxId, ufrag, pwd, prints))
    return found


def restart_credentials(current: str | None, offer: str) -> tuple[str, str] | None:
    """The new (ufrag, pwd) if `offer` restarts the ICE of the session whose remote
    description is `current`: the same m-lines (count, kinds, mids) and the same DTLS
    certificate with another ice-ufrag. None: any other offer (a new connection, which has
    a certificate of its own, or a renegotiation)."""
    if not current:
        return None
    try:
        old, new = media_ice(current), media_ice(offer)
    except (ValueError, IndexError, KeyError):
        return None
    if not new or [m[:2] for m in old] != [m[:2] for m in new]:
        return None
    ufrag, pwd, prints = new[0][2], new[0][3], new[0][4]
    if not ufrag or not pwd or ufrag == old[0][2] or not prints or prints != old[0][4]:
        return None
    return ufrag, pwd


class IceRestart:
    """One ICE restart of a live peer connection: its checks run in a task of their own
    (`start`), `done` tells whether a new path was found (False: the connection failed)."""

    def __init__(self, pc: RTCPeerConnection, state: RestartState) -> None:
        self.pc = pc
        self._state = state
        self._task: asyncio.Task[bool] | None = None
        # An offerer's restart waits for the answer (`accept`) before its checks start.
        self.pending_answer = False
        self._started = asyncio.Event()

    @classmethod
    async def offer(
        cls, pc: RTCPeerConnection, servers: Sequence[RTCIceServer] | None = None
    ) -> IceRestart:
        """Restart as the offerer: new local credentials and candidates, then the offer
        is set as local description (send `pc.localDescription`; give the answer to
        `accept`). The offerer takes the controlling role (as libwebrtc does)."""
        state = await begin_ice_restart(pc, controlling=True, servers=servers)
        await pc.setLocalDescription(await pc.createOffer())
        restart = cls(pc, state)
        restart.pending_answer = True
        return restart

    @classmethod
    async def answering(
        cls,
        pc: RTCPeerConnection,
        credentials: tuple[str, str],
        servers: Sequence[RTCIceServer] | None = None,
    ) -> IceRestart:
        """Restart as the answerer of an offer `restart_credentials` recognised: the
        caller then applies the offer and answers (setRemoteDescription, createAnswer,
        setLocalDescription) and calls `start`."""
        state = await begin_ice_restart(pc, controlling=False, servers=servers, remote=credentials)
        return cls(pc, state)

    async def accept(self, answer_sdp: str) -> None:
        """The answer to our restart offer: its credentials and candidates; checks start."""
        self.pending_answer = False
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
        ice = media_ice(answer_sdp)
        ufrag, pwd = ice[0][2], ice[0][3]
        if not ufrag or not pwd:
            raise ValueError("the answer has no ICE credentials")
        set_remote_ice(self._state, ufrag, pwd)
        self.start()

    def start(self, timeout: float = RESTART_TIMEOUT) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                run_ice_restart(self._state, timeout)
            )
        self._started.set()

    async def done(self) -> bool:
        """Whether the restart found a new path (waits for its start, then for it)."""
        await self._started.wait()
        if self._task is None:
            return False
        return await asyncio.shield(self._task)

    async def stop(self) -> None:
        """Stop the checks (another restart or the connection's end takes over)."""
        task, self._task = self._task, None
        self._started.set()
        await cancel_and_wait(task)
