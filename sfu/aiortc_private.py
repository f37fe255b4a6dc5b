"""Every private name of aiortc, aioice and pylibsrtp the SFU touches, in one place.

Forwarding without decoding means reaching under aiortc's public API: the receiver's
parsed-RTP hook, the sender's name-mangled counters, the DTLS transport's SRTP context,
aioice's nominated pair and its socket, libsrtp's C entry points. Those names change
between releases without notice, so the three libraries are pinned exactly in
pyproject.toml and this module refuses to import against any other version: a worker
then fails at start with a message naming the package, instead of forwarding silence
or dying on the first packet. Nothing else in `sfu/` may use a private name of theirs
(tests/test_import_graph.py checks).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ipaddress
import logging
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import aioice.ice
from aioice import Candidate, Connection, TransportPolicy
from aioice.candidate import candidate_foundation, candidate_priority
from aioice.ice import CandidatePair, StunProtocol, relayed_candidate, server_reflexive_candidate
from aioice.turn import UDP_SOCKET_BUFFER_SIZE, TurnTransport
from aioice.utils import random_string
from aiortc import (
    RTCDtlsTransport,
    RTCIceGatherer,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc.rtcicetransport import parse_stun_turn_uri
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import RtcpPacket, RtpPacket
from pylibsrtp import Session
from pylibsrtp._binding import ffi, lib

logger = logging.getLogger(__name__)

# The versions whose private names this module was written against (pyproject pins them).
PINNED: dict[str, str] = {"aiortc": "1.16.0", "aioice": "0.13.0", "pylibsrtp": "1.0.0"}

OPUS_RATE = 48000
# SSRCs one transport learns from payload types (aiortc's router adds every new one it
# sees; a peer inventing SSRCs would grow that table and the receiver's statistics).
MAX_LEARNED_SSRCS = 16

# libsrtp's `srtp_protect(ctx, buffer, &length)`, called per packet per subscriber, and
# cffi to build the scratch buffer and length cell it works in.
srtp_protect: Callable[[Any, Any, Any], int] = lib.srtp_protect
srtp_ffi = ffi

# A generic send path: (protect, sendto, addr) callables (TURN relays, tests).
Sink = tuple[Callable[[bytes], bytes], Callable[[Any, Any], Any], Any]
# The fast path: (libsrtp context, socket.sendto, addr, owner, socket), or (context,
# socket.send, 0, owner, socket) on a connected socket (the 0 is send()'s flags). `owner`
# is the pylibsrtp Session, kept alive as long as the sink; the socket is what the native
# fan-out (native.py) sends on.
FastSink = tuple[Any, Callable[[Any, Any], Any], Any, Session, socket.socket]
AnySink = Sink | FastSink


def srtp_protect_address() -> int:
    """The address of the bundled libsrtp's `srtp_protect` (for the native fan-out)."""
    return int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_protect")))


def srtp_context_address(context: Any) -> int:
    """The address of a libsrtp session (`srtp_t`, a FastSink's first element)."""
    return int(ffi.cast("uintptr_t", context))


class VersionMismatch(ImportError):
    """An installed aiortc/aioice/pylibsrtp is not the version this module was written for."""


def check_versions(pinned: dict[str, str] = PINNED) -> None:
    wrong = []
    for name, wanted in pinned.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "not installed"
        if installed != wanted:
            wrong.append(f"{name} {installed} (need {wanted})")
    if wrong:
        raise VersionMismatch(
            "the SFU uses private names of these libraries and was written against other "
            "versions: " + ", ".join(wrong) + "; install the versions pyproject.toml pins"
        )


check_versions()


# ---------------------------------------------------------------- ICE


def restrict_ice_addresses(addresses: Sequence[str]) -> None:
    """Gather host ICE candidates only on `addresses` (this process; empty: aioice's choice).

    aioice gathers on every interface except 127.0.0.1 and has no option for it; the
    worker (and the test labs, which must stay on loopback) need to pick.
    """
    if addresses:
        chosen = list(addresses)
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: list(chosen)


# ---------------------------------------------------------------- ICE gathering

# aioice waits up to this long for STUN and TURN servers (its own default, kept) ...
GATHER_TIMEOUT = 5.0
# ... but once a relay candidate exists, the other servers get as long again as it took
# (a TCP relay needs one round trip more than a UDP one, STUN one less), within these
# bounds: a server that never answers (UDP blocked, a dead URL) no longer holds the
# offer for 5 s.
RELAY_GRACE = (0.05, 0.25)
# Priority step between relay candidates of one gathering, in the order UDP, TCP, TLS
# (the local preference of RFC 8445 5.1.2.1, as browsers rank them).
_RELAY_RANK = {("udp", False): 0, ("tcp", False): 1, ("tcp", True): 2}


@dataclass(frozen=True)
class TurnUrl:
    """One TURN URL of an RTCIceServer, with its credentials."""

    host: str
    port: int
    transport: str  # "udp" or "tcp" (the transport to the TURN server)
    ssl: bool  # turns:
    username: str | None
    password: str | None

    @property
    def rank(self) -> int:
        return _RELAY_RANK.get((self.transport, self.ssl), 3)


@dataclass(frozen=True)
class IceServers:
    """What a gathering uses: aiortc takes one STUN and ONE TURN URL; this keeps all."""

    stun: tuple[str, int] | None = None
    turn: tuple[TurnUrl, ...] = ()

    @classmethod
    def parse(cls, servers: Sequence[RTCIceServer]) -> IceServers:
        """Every usable URL (aiortc's own rules: turn udp/tcp, turns tcp, password
        credentials; only the first STUN URL), UDP relays first, each once."""
        stun: tuple[str, int] | None = None
        turn: list[TurnUrl] = []
        for server in servers:
            urls = server.urls if isinstance(server.urls, list) else [server.urls]
            for url in urls:
                try:
                    parsed = parse_stun_turn_uri(url)
                except ValueError:
                    continue
                if parsed["scheme"] == "stun":
                    stun = stun or (parsed["host"], parsed["port"])
                    continue
                ssl = parsed["scheme"] == "turns"
                allowed = ("tcp",) if ssl else ("udp", "tcp")
                if parsed["scheme"] not in ("turn", "turns") or parsed["transport"] not in allowed:
                    continue
                if server.credentialType != "password":
                    continue
                relay = TurnUrl(
                    parsed["host"],
                    parsed["port"],
                    parsed["transport"],
                    ssl,
                    server.username,
                    server.credential,
                )
                if relay not in turn:
                    turn.append(relay)
        return cls(stun, tuple(sorted(turn, key=lambda relay: relay.rank)))


async def gather(
    conn: Connection, servers: IceServers, addresses: Sequence[str], component: int = 1
) -> list[Candidate]:
    """Host, server-reflexive and relay candidates of `conn` (one relay per TURN URL);
    their sockets join `conn`'s protocols.

    aioice's own gathering asks one TURN server and waits up to 5 s for every server.
    Here every TURN URL is tried at once, and once a relay candidate exists the rest get a
    short grace (RELAY_GRACE): at a site that blocks UDP the TCP relay arrives in a few round trips and
    the UDP relay and STUN, which never will, no longer hold the offer.
    """
    loop = asyncio.get_running_loop()
    candidates: list[Candidate] = []
    hosts: list[StunProtocol] = []
    for address in addresses:
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: StunProtocol(conn), local_addr=(address, 0)
            )
        except OSError as exc:
            logger.info("ICE: cannot bind to %s: %s", address, exc)
            continue
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_SOCKET_BUFFER_SIZE)
        bound = transport.get_extra_info("sockname")
        protocol.local_candidate = Candidate(
            foundation=candidate_foundation("host", "udp", bound[0]),
            component=component,
            transport="udp",
            priority=candidate_priority(component, "host"),
            host=bound[0],
            port=bound[1],
            type="host",
        )
        hosts.append(protocol)
        candidates.append(protocol.local_candidate)
    conn._protocols += hosts

    tasks: list[asyncio.Task[tuple[Candidate, StunProtocol | None]]] = []
    if servers.stun is not None:
        for protocol in hosts:
            if ipaddress.ip_address(protocol.local_candidate.host).version == 4:
                tasks.append(loop.create_task(server_reflexive_candidate(protocol, servers.stun)))
    hide = conn._transport_policy == TransportPolicy.RELAY
    for relay in servers.turn:
        tasks.append(loop.create_task(_relayed(conn, component, relay, hide)))

    started = loop.time()
    deadline = started + GATHER_TIMEOUT
    pending = set(tasks)

    def take(done: set[asyncio.Task[tuple[Candidate, StunProtocol | None]]]) -> bool:
        relayed = False
        for task in done:
            if task.cancelled() or task.exception() is not None:
                continue
            candidate, protocol = task.result()
            candidates.append(candidate)
            if protocol is not None:
                conn._protocols.append(protocol)
                relayed = True
        return relayed

    while pending:
        left = deadline - loop.time()
        if left <= 0:
            break
        done, pending = await asyncio.wait(
            pending, timeout=left, return_when=asyncio.FIRST_COMPLETED
        )
        if take(done):
            now = loop.time()
            low, high = RELAY_GRACE
            deadline = min(deadline, now + min(high, max(low, now - started)))
    for task in pending:
        task.cancel()
    if pending:
        # Cancelled allocations close their sockets; one that finished meanwhile counts.
        done, _ = await asyncio.wait(pending)
        take(done)
    return candidates


async def _relayed(
    conn: Connection, component: int, relay: TurnUrl, hide: bool
) -> tuple[Candidate, StunProtocol | None]:
    candidate, protocol = await relayed_candidate(
        component=component,
        hide_related_address=hide,
        protocol_factory=lambda: StunProtocol(conn),
        turn_server=(relay.host, relay.port),
        turn_username=relay.username,
        turn_password=relay.password,
        turn_ssl=relay.ssl,
        turn_transport=relay.transport,
    )
    candidate.priority -= relay.rank << 8  # UDP relays before TCP before TLS
    return candidate, protocol


def _use_servers(conn: Connection, servers: IceServers) -> None:
    """Make `conn`'s gathering (aioice calls get_component_candidates) use `servers`."""

    async def get_component_candidates(
        component: int, addresses: list[str], timeout: int = 5
    ) -> list[Candidate]:
        return await gather(conn, servers, addresses, component)

    conn.get_component_candidates = get_component_candidates  # type: ignore[method-assign]
    conn._yv_servers = servers  # type: ignore[attr-defined]


def gather_every_turn_url() -> None:
    """Every RTCIceGatherer of this process gathers with `gather` (one relay candidate per
    TURN URL, RELAY_GRACE after the first relay). Idempotent.

    aiortc hands aioice only the first TURN URL of its configuration
    (rtcicetransport.connection_kwargs), so the order of `ice.turn.urls` silently decided
    whether a worker or the Python client could fall back to TCP.
    """
    if getattr(RTCIceGatherer, "_yv_every_url", False):
        return
    original = RTCIceGatherer.__init__

    def init(
        self: RTCIceGatherer,
        iceServers: list[RTCIceServer] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        original(self, iceServers, *args, **kwargs)
        servers = iceServers if iceServers is not None else self.getDefaultIceServers()
        _use_servers(self._connection, IceServers.parse(servers))

    RTCIceGatherer.__init__ = init  # type: ignore[method-assign]
    RTCIceGatherer._yv_every_url = True  # type: ignore[attr-defined]


# ---------------------------------------------------------------- ICE restart

# A restart whose checks found no path by then fails the connection (consent freshness,
# RFC 7675, gives up on a silent path after about as long).
RESTART_TIMEOUT = 30.0
_CHECK_PACING = 0.02  # Ta: one new check per 20 ms, as aioice's connect()


def ice_connection(pc: RTCPeerConnection) -> Connection | None:
    """The aioice Connection of a peer connection's (bundled) transport."""
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        if dtls is not None:
            conn: Connection = dtls.transport._connection
            return conn
    return None


def nominated_addresses(pc: RTCPeerConnection) -> tuple[Any, Any] | None:
    """(local, remote) address of the nominated pair, or None."""
    conn = ice_connection(pc)
    pair = conn._nominated.get(1) if conn is not None else None
    if pair is None:
        return None
    return pair.local_addr, pair.remote_addr


@dataclass
class RestartState:
    """One ICE restart in progress on one aioice Connection."""

    conn: Connection
    old_pair: CandidatePair | None
    retired: list[StunProtocol] = field(default_factory=list)


async def begin_ice_restart(
    pc: RTCPeerConnection,
    controlling: bool,
    servers: Sequence[RTCIceServer] | None = None,
    remote: tuple[str, str] | None = None,
) -> RestartState:
    """Start an ICE restart on the existing connection (RFC 8445 9): fresh local
    credentials and candidates (new sockets, new relays), the remote's candidates, check
    list and early checks forgotten; `remote` (ufrag, pwd) when already known (answering a
    restart offer). The old nominated pair keeps carrying DTLS/SRTP until a new one is
    nominated (`run_ice_restart`); its sockets are then closed. Call before
    createOffer/createAnswer: aiortc puts the gatherer's (new) parameters and candidates
    into the description.
    """
    conn = ice_connection(pc)
    if conn is None:
        raise ValueError("the peer connection has no ICE transport")
    gatherer = pc.getTransceivers()[0].receiver.transport.transport.iceGatherer
    # Consent checks stop while the remote's credentials change; resumed on the new pair.
    consent, conn._query_consent_task = conn._query_consent_task, None
    if consent is not None:
        consent.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consent
    for pair in conn._check_list:
        if pair.task is not None:
            pair.task.cancel()
    conn._check_list = []
    conn._nominating = set()
    conn._check_list_done = False
    conn._check_list_state = asyncio.Queue()
    conn._early_checks.clear()
    conn._remote_candidates = []
    conn._remote_candidates_end = False
    gatherer._remote_candidates_end = False
    conn.ice_controlling = controlling
    conn.remote_username, conn.remote_password = remote if remote else (None, None)
    # Until the remote's credentials are known, its checks wait (aioice's early checks).
    conn._early_checks_done = remote is not None
    conn._local_username = random_string(4)
    conn._local_password = random_string(22)

    retired: list[StunProtocol] | None = getattr(conn, "_yv_retired", None)
    if retired is None:
        retired = []
        _close_retired_too(conn, retired)
    retired += conn._protocols
    conn._protocols = []
    state = RestartState(conn, conn._nominated.get(1), retired)
    if servers is not None:
        chosen = IceServers.parse(servers)
    else:
        chosen = getattr(conn, "_yv_servers", None) or IceServers()
    addresses: list[str] = []
    if conn._transport_policy == TransportPolicy.ALL:
        addresses = aioice.ice.get_host_addresses(conn._use_ipv4, conn._use_ipv6)
    conn._local_candidates = await gather(conn, chosen, addresses)
    conn._local_candidates_end = True
    return state


def _close_retired_too(conn: Connection, retired: list[StunProtocol]) -> None:
    """conn.close() closes the sockets a restart retired as well (it knows only the
    current ones)."""
    conn._yv_retired = retired  # type: ignore[attr-defined]
    close = conn.close

    async def close_all() -> None:
        await close()
        while retired:
            await retired.pop().close()

    conn.close = close_all  # type: ignore[method-assign]


def set_remote_ice(state: RestartState, ufrag: str, pwd: str) -> None:
    """The remote's new credentials (from the answer to our restart offer); the checks it
    sent meanwhile are handled now."""
    conn = state.conn
    conn.remote_username, conn.remote_password = ufrag, pwd
    early = list(conn._early_checks)
    conn._early_checks.clear()
    conn._early_checks_done = True
    for check in early:
        conn.check_incoming(*check)


async def run_ice_restart(state: RestartState, timeout: float = RESTART_TIMEOUT) -> bool:
    """Run the checks until a new pair is nominated (True: the sockets the restart retired
    are closed, consent freshness goes on on the new pair) or the restart fails (False:
    the connection is closed, so aiortc reports it failed)."""
    conn = state.conn
    waiting, frozen, failed = (
        CandidatePair.State.WAITING,
        CandidatePair.State.FROZEN,
        CandidatePair.State.FAILED,
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            pair = conn._nominated.get(1)
            if pair is not None and pair is not state.old_pair and pair.protocol in conn._protocols:
                break
            if conn._closing:
                return False
            if conn.remote_password is not None:
                started = False
                for wanted in (waiting, frozen):
                    for candidate_pair in conn._check_list:
                        if candidate_pair.state == wanted and candidate_pair.task is None:
                            conn.check_start_task(candidate_pair)
                            started = True
                            break
                    if started:
                        break
                if (
                    not started
                    and conn._remote_candidates_end
                    and not conn._remote_candidates_resolving
                    and conn._check_list
                    and all(p.state == failed for p in conn._check_list)
                ):
                    raise TimeoutError("every candidate pair failed")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no candidate pair within {timeout:.0f} s")
            await asyncio.sleep(_CHECK_PACING)
    except TimeoutError as exc:
        logger.info("ICE restart failed: %s", exc)
        await conn.close()
        return False
    for other in conn._check_list:
        if other.task is not None and other is not pair:
            other.task.cancel()
    keep = pair.protocol
    for protocol in [p for p in state.retired if p is not keep]:
        state.retired.remove(protocol)
        await protocol.close()
    if conn._query_consent_task is None and not conn._closing:
        conn._query_consent_task = asyncio.get_running_loop().create_task(conn.query_consent())
    return True


# ---------------------------------------------------------------- transceivers


def offered_direction(transceiver: RTCRtpTransceiver) -> str | None:
    """The direction the remote offered for this m-line (our side's view of it)."""
    direction: str | None = transceiver._offerDirection
    return direction


def keep_only_codec(transceiver: RTCRtpTransceiver, mime_type: str, **params: Any) -> int | None:
    """Negotiate only `mime_type` (with extra fmtp `params`); its payload type, or None."""
    for codec in transceiver._codecs:
        if codec.mimeType.lower() == mime_type.lower():
            chosen = copy.deepcopy(codec)
            chosen.parameters = {**chosen.parameters, **params}
            transceiver._codecs = [chosen]
            return int(chosen.payloadType or 0)
    return None


def negotiated_layout(transceiver: RTCRtpTransceiver) -> tuple[int, list[Any]]:
    """The negotiated payload type and header extensions of a transceiver."""
    return int(transceiver._codecs[0].payloadType or 0), list(transceiver._headerExtensions)


def set_sender_ssrc(sender: RTCRtpSender, ssrc: int) -> None:
    """Send under `ssrc` (a slot's fixed SSRC) instead of aiortc's random one."""
    sender._ssrc = ssrc


# ---------------------------------------------------------------- sending


def make_sink(dtls: RTCDtlsTransport, tasks: set[asyncio.Task[None]]) -> AnySink | None:
    """The direct send path of a connected transport, or None if it is not connected.

    Host and server-reflexive pairs get a FastSink: libsrtp context and the UDP
    socket's `sendto` (no coroutine, no aioice lookup, no asyncio transport); a
    TURN-relayed pair goes through aioice's coroutine as a task kept in `tasks`.
    """
    srtp = dtls._tx_srtp
    if srtp is None or dtls.state != "connected":
        return None
    connection = dtls.transport._connection
    pair = connection._nominated.get(1)
    if pair is None:
        return None
    protocol = pair.protocol
    if type(protocol) is StunProtocol:
        sock = getattr(protocol.transport, "_sock", None)
        if isinstance(sock, socket.socket):
            try:
                # Once ICE has nominated a host pair this socket only talks to that
                # address (consent checks included): connecting it saves the kernel a
                # route lookup per packet and Python the address conversion. The sink
                # then calls sock.send(data, 0), the 0 being send()'s flags.
                sock.connect(pair.remote_addr)
                return fast_sink(srtp, sock)
            except OSError:
                return fast_sink(srtp, sock, pair.remote_addr)
        if isinstance(protocol.transport, TurnTransport):
            return (srtp.protect, relay_sender(protocol.transport, tasks), pair.remote_addr)
        return (srtp.protect, protocol.transport.sendto, pair.remote_addr)
    loop = asyncio.get_running_loop()

    def send(data: bytes, addr: Any) -> None:
        task = loop.create_task(protocol.send_data(data, addr))
        tasks.add(task)
        task.add_done_callback(_send_done(tasks))

    return (srtp.protect, send, pair.remote_addr)


def fast_sink(session: Session, sock: socket.socket, addr: Any = None) -> FastSink:
    """The FastSink of a pylibsrtp session and a UDP socket: connected (addr None) or
    sending to `addr`."""
    if addr is None:
        return (session._srtp[0], sock.send, 0, session, sock)
    return (session._srtp[0], sock.sendto, addr, session, sock)


def relay_sender(
    outer: TurnTransport, tasks: set[asyncio.Task[None]]
) -> Callable[[bytes, Any], None]:
    """Send through a TURN allocation: on a bound channel straight away (ChannelData,
    RFC 8656 12.4), as aioice's coroutine (in a task kept in `tasks`) only while the
    channel is being bound or is due for its refresh. aioice's own `sendto` makes a
    task of every packet."""
    inner = outer._TurnTransport__inner_protocol  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()
    channels: dict[Any, int] = inner.peer_to_channel
    refresh_at: dict[int, float] = inner.channel_refresh_at
    waiters: dict[Any, Any] = inner.peer_connect_waiters
    pack = struct.Struct("!HH").pack
    send = inner._send
    clock = time.time

    def relay(data: bytes, addr: Any) -> None:
        if outer._TurnTransport__close_task is not None or inner.transport.is_closing():  # type: ignore[attr-defined]
            return  # what aioice's sendto does once the allocation is going away
        channel = channels.get(addr)
        if channel is not None and addr not in waiters and clock() <= refresh_at[channel]:
            send(pack(channel, len(data)) + data)
            return
        task = loop.create_task(inner.send_data(data, addr))
        tasks.add(task)
        task.add_done_callback(_send_done(tasks))

    return relay


def _send_done(tasks: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a failed bind costs this packet, nothing more

    return done


def drop_rtcp(dtls: RTCDtlsTransport) -> bool:
    """Drop the RTCP a connection receives, in the socket callback, before any parsing.

    A listener's RTCP is Receiver Reports (and SDES) about what the forwarder sent it:
    aiortc would SRTCP-unprotect each, parse it into Python objects, route it and
    update the sender's RTT statistics, which nothing here reads; per listener per
    second that is a large share of the fixed cost. RTCP is told from RTP by its packet
    type byte (RFC 5761 4: 192-223); STUN (consent) and DTLS pass as before.
    """
    pair = dtls.transport._connection._nominated.get(1)
    if pair is None:
        return False
    protocol = pair.protocol
    received = protocol.datagram_received

    def datagram_received(data: bytes, addr: Any) -> None:
        if len(data) > 1 and 191 < data[1] < 224 and 127 < data[0] < 192:
            return
        received(data, addr)

    protocol.datagram_received = datagram_received  # type: ignore[assignment]
    return True


async def send_rtcp(sender: RTCRtpSender, data: bytes) -> None:
    """Send an already-built RTCP compound packet on a sender's transport (SRTCP)."""
    await sender.transport._send_rtp(data)


def sender_cname(sender: RTCRtpSender) -> str:
    cname: str = getattr(sender, "_RTCRtpSender__cname", None) or ""
    return cname


def record_sender_report(
    sender: RTCRtpSender, packets: int, octets: int, ntp: int, rtp_ts: int
) -> None:
    """Keep a sender's own view (getStats, RTT from receiver reports) in step with the
    Sender Report the forwarder just sent in its name."""
    sender._RTCRtpSender__packet_count = packets  # type: ignore[attr-defined]
    sender._RTCRtpSender__octet_count = octets  # type: ignore[attr-defined]
    sender._RTCRtpSender__ntp_timestamp = ntp  # type: ignore[attr-defined]
    sender._RTCRtpSender__rtp_timestamp = rtp_ts  # type: ignore[attr-defined]
    sender._RTCRtpSender__lsr = (ntp >> 16) & 0xFFFFFFFF  # type: ignore[attr-defined]
    sender._RTCRtpSender__lsr_time = time.time()  # type: ignore[attr-defined]


def quiet_sender(sender: RTCRtpSender) -> None:
    """Stop aiortc's own RTP/RTCP loops for a sender the forwarder feeds.

    Without a track its RTP loop would poll every 20 ms and its RTCP loop would send
    Sender Reports with zero counters; the forwarder sends truthful ones instead.
    Must be called before the sender is started (before setLocalDescription).
    """

    def idle(started: str, exited: str) -> Callable[..., Any]:
        async def run(*_: Any) -> None:
            getattr(sender, started).set()
            try:
                await asyncio.get_running_loop().create_future()
            except asyncio.CancelledError:
                pass
            finally:
                getattr(sender, exited).set()

        return run

    sender._run_rtp = idle("_RTCRtpSender__rtp_started", "_RTCRtpSender__rtp_exited")  # type: ignore[method-assign]
    sender._run_rtcp = idle("_RTCRtpSender__rtcp_started", "_RTCRtpSender__rtcp_exited")  # type: ignore[method-assign]


# ---------------------------------------------------------------- receiving


def tap_receiver(
    receiver: RTCRtpReceiver, payload_type: int, on_packet: Callable[[RtpPacket], None]
) -> None:
    """Route a receiver's parsed RTP to `on_packet` instead of its jitter buffer/decoder.

    Keeps the receiver's per-SSRC statistics so its RTCP Receiver Reports stay truthful.
    Packets of any other payload type are dropped.
    """
    streams: dict[int, StreamStatistics] = receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]

    async def handle(packet: RtpPacket, arrival_time_ms: int = 0) -> None:
        if packet.payload_type != payload_type:
            return
        stats = streams.get(packet.ssrc)
        if stats is None:
            stats = streams[packet.ssrc] = StreamStatistics(OPUS_RATE)
        stats.add(packet)
        on_packet(packet)

    receiver._handle_rtp_packet = handle  # type: ignore[method-assign]


def guard_receive_path() -> None:
    """Make aiortc's SRTP receive path drop malformed packets instead of dying on them.

    aiortc 1.16.0 parses decrypted RTP/RTCP in `RTCDtlsTransport._handle_rtp_data` and
    `_handle_rtcp_data` and catches only ValueError; an audio-level extension of the wrong
    length raises struct.error, which ends the transport's receive loop, so one bad packet
    from a publisher cut its whole connection (found by tests/test_fuzz.py). The same
    steps are done here with that caught, and with a bound on the SSRCs a transport
    learns. Patched on the class, once per process (a worker process is all SFU).
    """
    if getattr(RTCDtlsTransport, "_yv_guarded", False):
        return

    async def handle_rtp_data(self: Any, data: bytes, arrival_time_ms: int) -> None:
        try:
            packet = RtpPacket.parse(data, self._rtp_header_extensions_map)
        except (ValueError, struct.error):
            return
        router = self._rtp_router
        if packet.ssrc not in router.ssrc_table and len(router.ssrc_table) >= MAX_LEARNED_SSRCS:
            return
        receiver = router.route_rtp(packet)
        if receiver is not None:
            await receiver._handle_rtp_packet(packet, arrival_time_ms=arrival_time_ms)

    async def handle_rtcp_data(self: Any, data: bytes) -> None:
        try:
            packets = RtcpPacket.parse(data)
        except (ValueError, struct.error):
            return
        for packet in packets:
            for recipient in self._rtp_router.route_rtcp(packet):
                await recipient._handle_rtcp_packet(packet)

    RTCDtlsTransport._handle_rtp_data = handle_rtp_data  # type: ignore[method-assign]
    RTCDtlsTransport._handle_rtcp_data = handle_rtcp_data  # type: ignore[method-assign]
    RTCDtlsTransport._yv_guarded = True  # type: ignore[attr-defined]
