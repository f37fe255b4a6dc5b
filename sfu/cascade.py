"""One room across several workers: the origin's slot streams, sent once to each edge.

A worker fans one packet out to a few hundred listeners before its core is busy; a bigger
net spans workers. Its publishers stay on the origin worker, which picks the speakers
(slots) as always and sends each slot's packets once per edge worker, as if that edge
were one more subscriber of the slot. An edge worker fans those packets out to its own
listeners with the same slot numbers: slot i of the origin arrives on the edge's port i
and goes out in the edge's slot i, so the mapping the server broadcasts holds for every
listener, wherever it is.

The link is plain RTP on loopback (workers of one host), SRTP between hosts: the edge
draws the key, and it reaches the origin over the control connections (`cascadeReady`,
`cascadeLink`). The origin's numbering is already continuous per slot (it rebases when a
slot changes source), so the edge forwards each slot as one unchanging source.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import os
import socket
from collections.abc import Callable

from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from pylibsrtp import Error as SrtpError
from pylibsrtp import Policy, Session

from .forwarder import AUDIO_LEVEL_URI, Forwarder, Layout

logger = logging.getLogger(__name__)

# The link's own RTP layout (edges rewrite every packet for their listeners anyway).
LINK_PT = 111
LINK_LEVEL_ID = 1
KEY_BYTES = 30  # AES_CM_128_HMAC_SHA1_80: 16-byte key + 14-byte salt
# Receive buffer per slot port: a burst of a few hundred ms at 50 packets/s fits.
RECEIVE_BUFFER = 256 * 1024
# A sequence step forward of at least this (a minute of 20 ms packets), or backward by
# more than REORDER, is a restarted stream (a new link), not loss or reordering.
JUMP = 3000
REORDER = 100


def source_of(index: int) -> str:
    """The edge forwarder's source id of slot `index` (never a participant id)."""
    return f"\0cascade{index}"


def edge_subscriber(edge: str) -> str:
    """The origin forwarder's subscriber id of an edge worker (never a participant id)."""
    return f"\0edge:{edge}"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _policy(key: bytes, direction: int) -> Policy:
    return Policy(key=key, ssrc_type=direction, srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80)


class _SlotPort(asyncio.DatagramProtocol):
    """One slot's receive port on an edge: unprotect, parse, hand to the forwarder."""

    def __init__(self, index: int, session: Session | None, forwarder: Forwarder) -> None:
        self.index = index
        self.source = source_of(index)
        self.forwarder = forwarder
        self.last_seq: int | None = None
        self.session = session
        self.extensions = HeaderExtensionsMap()
        self.extensions.configure(
            RTCRtpParameters(
                headerExtensions=[
                    RTCRtpHeaderExtensionParameters(id=LINK_LEVEL_ID, uri=AUDIO_LEVEL_URI)
                ]
            )
        )
        self.transport: asyncio.DatagramTransport | None = None
        self.received = 0
        self.dropped = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            if self.session is not None:
                data = self.session.unprotect(data)
            packet = RtpPacket.parse(data, self.extensions)
        except (SrtpError, ValueError):
            self.dropped += 1  # not from our origin (bad tag), replayed, or not RTP
            return
        self.received += 1
        seq, last = packet.sequence_number, self.last_seq
        step = JUMP if last is None else (seq - last) & 0xFFFF
        if step >= JUMP and step <= 0xFFFF - REORDER:
            # The origin's output for this edge started afresh (a new link): the edge's
            # listeners keep one continuous numbering (SRTP would drop a jump back).
            self.forwarder.rebase(self.index)
            self.last_seq = seq
        elif 0 < step < JUMP:
            self.last_seq = seq
        self.forwarder.forward(self.source, packet)

    def error_received(self, exc: Exception) -> None:
        logger.debug("cascade port: %s", exc)


class EdgeReceiver:
    """An edge room's receive side: one UDP port per slot on `host`, fed to `forwarder`."""

    def __init__(self, forwarder: Forwarder, host: str, secure: bool | None = None) -> None:
        self.forwarder = forwarder
        self.host = host
        if secure is None:  # SRTP unless the link stays on this host
            secure = not is_loopback(host)
        self.key: bytes | None = os.urandom(KEY_BYTES) if secure else None
        self.ports: list[int] = []
        self._protocols: list[_SlotPort] = []

    @property
    def key_text(self) -> str | None:
        return base64.b64encode(self.key).decode() if self.key is not None else None

    @property
    def received(self) -> int:
        return sum(p.received for p in self._protocols)

    @property
    def dropped(self) -> int:
        return sum(p.dropped for p in self._protocols)

    async def start(self) -> None:
        """Open the ports and make each slot's source its port (constant from now on)."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for index in range(len(self.forwarder.slots)):
            session = (
                Session(_policy(self.key, Policy.SSRC_ANY_INBOUND))
                if self.key is not None
                else None
            )
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
                sock.bind((self.host, 0))
                sock.setblocking(False)
            except OSError:
                sock.close()
                await self.stop()
                raise
            protocol = _SlotPort(index, session, self.forwarder)
            await loop.create_datagram_endpoint(lambda p=protocol: p, sock=sock)  # type: ignore[misc]
            self._protocols.append(protocol)
            self.ports.append(sock.getsockname()[1])
            self.forwarder.set_source(index, source_of(index))

    async def stop(self) -> None:
        protocols, self._protocols = self._protocols, []
        for protocol in protocols:
            if protocol.transport is not None:
                protocol.transport.close()
        self.ports = []


class EdgeLink:
    """The origin's side of one edge: an output per slot in the origin's forwarder."""

    def __init__(
        self, forwarder: Forwarder, edge: str, host: str, ports: list[int], key: str | None
    ) -> None:
        self.forwarder = forwarder
        self.edge = edge
        self.subscriber = edge_subscriber(edge)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self.session: Session | None = None
        if key is not None:
            self.session = Session(_policy(base64.b64decode(key), Policy.SSRC_ANY_OUTBOUND))
        protect: Callable[[bytes], bytes] = (
            self.session.protect if self.session is not None else bytes
        )
        layout = Layout(LINK_PT, LINK_LEVEL_ID, None, None)
        slots = len(forwarder.slots)
        for index, port in enumerate(ports[:slots]):
            # A three-item sink takes the forwarder's Python loop: once per packet and edge.
            sink = (protect, self._sock.sendto, (host, port))
            forwarder.add_output(self.subscriber, index, layout, sink, first=True)

    def close(self) -> None:
        self.forwarder.remove_subscriber(self.subscriber)
        self._sock.close()
