"""ICE restart in place (issue 16): a new network path under the same peer connection.

Real aiortc peers on loopback: a client restarts ICE (new sockets, i.e. a new local
address, and a new ice-ufrag) and keeps its connection, DTLS session, slots and seat;
the SFU worker answers on the same connection and moves its outputs to the new path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnection

from tests.fixtures.turn import (
    TurnServer,
    free_port,
    running_turnserver,
    turn_config,
    turnserver_available,
)
from tests.servers import ServerProcess
from tests.test_sfu_integration import enter, sfu_connected, sfu_server, until
from tests.test_sfu_worker import ROOM, Frames, Participant, close_all, config, wait_for
from tests.voiceclient import SFU, VoiceClient
from yahaml_voice.core.config import load_config
from yahaml_voice.core.tokens import turn_credentials
from yahaml_voice.sfu.aiortc_private import nominated_addresses
from yahaml_voice.sfu.icerestart import IceRestart, restart_credentials
from yahaml_voice.sfu.worker import Worker


@pytest.fixture
async def rig(loopback_ice: None) -> AsyncIterator[tuple[Worker, Frames, list[Participant]]]:
    frames = Frames()
    worker = Worker(config(slot_hold="0.5s"), "w-test", frames.emit)
    people: list[Participant] = []
    try:
        yield worker, frames, people
    finally:
        await close_all(people, worker)


async def restart(person: Participant, worker: Worker, frames: Frames) -> None:
    """`person` restarts ICE with the worker (as a browser's restartIce() would)."""
    seen = len(frames.items)
    ice = await IceRestart.offer(person.pc)
    frame: dict[str, Any] = {
        "roomId": ROOM,
        "from": person.id,
        "role": "operator" if person.can_publish else "listener",
        "canPublish": person.can_publish,
        "callsign": person.id.upper(),
        "type": "offer",
        "data": {"type": "offer", "sdp": person.pc.localDescription.sdp},
    }
    await worker.handle({"type": "signal", "data": frame})
    await wait_for(
        lambda: any(
            k == "signal" and d["to"] == person.id and d["type"] == "answer"
            for k, d in frames.items[seen:]
        )
    )
    answer = next(d for k, d in frames.items[seen:] if k == "signal" and d["to"] == person.id)
    await ice.accept(answer["data"]["sdp"])
    assert await ice.done()


async def test_sfu_listener_and_speaker_restart_ice_in_place(
    rig: tuple[Worker, Frames, list[Participant]],
) -> None:
    worker, frames, people = rig
    alice, carol = Participant("alice", True), Participant("carol", False)
    people += [alice, carol]
    for person in people:
        await person.join(worker, frames)
    alice.speak(True)
    await frames.wait("slots", lambda d: d["slots"][0]["participantId"] == "alice")
    await wait_for(lambda: carol.loud[0] >= 10)
    room = worker.rooms[ROOM]
    worker_pcs = {pid: peer.pc for pid, peer in room.peers.items()}
    outputs = {(o.subscriber, o.index): o for o in room.forwarder.outputs()}

    # The listener moves (new local port): same connections on both ends, audio resumes.
    before = nominated_addresses(carol.pc)
    client_pc = carol.pc
    await restart(carol, worker, frames)
    after = nominated_addresses(carol.pc)
    assert before is not None and after is not None and after[0] != before[0]
    assert carol.pc is client_pc and carol.pc.connectionState == "connected"
    heard = carol.loud[0]
    await wait_for(lambda: carol.loud[0] >= heard + 25)
    assert {pid: peer.pc for pid, peer in room.peers.items()} == worker_pcs
    # The same outputs (numbering, counts, groups) on the new path; slots unchanged.
    assert {(o.subscriber, o.index): o for o in room.forwarder.outputs()} == outputs
    assert frames.last_slots()[0] == "alice"
    sent = [o.counts()[0] for o in outputs.values() if o.subscriber == "carol"]
    assert sent[0] > heard

    # The speaker moves: still forwarded to the listener, still in its slot.
    before = nominated_addresses(alice.pc)
    await restart(alice, worker, frames)
    after = nominated_addresses(alice.pc)
    assert before is not None and after is not None and after[0] != before[0]
    heard = carol.loud[0]
    await wait_for(lambda: carol.loud[0] >= heard + 25)
    assert frames.last_slots()[0] == "alice"
    assert alice.packets == [0, 0, 0]  # never hears herself
    assert worker.load().peers == 2


async def test_a_changed_offer_is_still_a_new_connection(
    rig: tuple[Worker, Frames, list[Participant]],
) -> None:
    """Only the same m-lines with a new ice-ufrag restart in place; another offer (here a
    fresh connection of the same participant) replaces the connection as before."""
    worker, frames, people = rig
    carol = Participant("carol", False)
    people.append(carol)
    await carol.join(worker, frames)
    first = worker.rooms[ROOM].peers["carol"].pc
    again = Participant("carol", False)
    people.append(again)
    frames.items.clear()  # join() takes the first answer to "carol" it sees
    await again.join(worker, frames)
    await wait_for(lambda: again.pc.connectionState == "connected")
    assert worker.rooms[ROOM].peers["carol"].pc is not first


# ------------------------------------------------------------ through a real server


def _roster_changes(client: VoiceClient, since: int) -> list[str]:
    kinds = ("participantJoined", "participantLeft", "rosterBatch", "roomModeChanged")
    return [e["type"] for e in client.events[since:] if e.get("type") in kinds]


async def test_sfu_restart_through_the_server_keeps_seat_and_slots(
    server_factory: Callable[..., ServerProcess],
    client_factory: Callable[..., VoiceClient],
    loopback_ice: None,
) -> None:
    """The server routes a restart offer to the participant's worker like any offer: no
    re-join (no roster event, same seat), same connection on both ends, audio resumes."""
    server = sfu_server(server_factory, threshold=2, workers=1)
    speaker, listener = client_factory(server.url, tone=440), client_factory(server.url, tone=660)
    await enter(speaker, "W1AW", muted=False)
    await enter(listener, "G4ABC")
    await until(lambda: sfu_connected(speaker) and sfu_connected(listener), 30, "both on the SFU")
    await listener.wait_audio(SFU, frames=25, timeout=20)
    marks = {c.participant_id: len(c.events) for c in (speaker, listener)}

    for mover in (listener, speaker):
        pc = mover.peers[SFU].pc
        before = nominated_addresses(pc)
        assert await mover.restart_ice()
        after = nominated_addresses(pc)
        assert mover.peers[SFU].pc is pc and pc.connectionState == "connected"
        assert before is not None and after is not None and after[0] != before[0]
        await listener.wait_audio(SFU, frames=25, timeout=10)
    assert speaker.participant_id in listener.slots.values()
    for client in (speaker, listener):
        assert _roster_changes(client, marks[client.participant_id]) == []
    assert listener.roster == {speaker.participant_id}


async def test_mesh_restart_either_side_audio_resumes_both_ways(
    server: ServerProcess, client_factory: Callable[..., VoiceClient], loopback_ice: None
) -> None:
    alice, bob = client_factory(server.url, tone=440), client_factory(server.url, tone=660)
    for client, call in ((alice, "W1AW"), (bob, "G4ABC")):
        await client.login(call)
        await client.connect()
        await client.join("shack")
    assert alice.participant_id and bob.participant_id
    await alice.wait_audio(bob.participant_id, frames=25, timeout=20)
    await bob.wait_audio(alice.participant_id, frames=25, timeout=20)
    pcs = (alice.peers[bob.participant_id].pc, bob.peers[alice.participant_id].pc)
    # Bob answered the call; he restarts first (the restarting side offers, and becomes
    # the controlling agent), then Alice.
    for mover, other in ((bob, alice), (alice, bob)):
        assert await mover.restart_ice(other.participant_id)
        await alice.wait_audio(bob.participant_id, frames=25, timeout=10)
        await bob.wait_audio(alice.participant_id, frames=25, timeout=10)
    assert (alice.peers[bob.participant_id].pc, bob.peers[alice.participant_id].pc) == pcs
    assert alice.peers[bob.participant_id].restarts == 2


# ------------------------------------------------------------ every TURN URL


@pytest.fixture(scope="module")
def turn_lab() -> Iterator[TurnServer]:
    if not turnserver_available():
        pytest.skip("needs turnserver (Debian package coturn)")
    with running_turnserver(turn_config(allow_loopback_peers=True)) as server:
        yield server


async def test_worker_and_client_relay_over_tcp_when_the_tcp_url_is_not_first(
    turn_lab: TurnServer, loopback_ice: None
) -> None:
    """aiortc alone takes only the first TURN URL: with a dead UDP URL first, neither the
    worker nor a relay-only client had a relay candidate. Every URL is tried now."""
    dead = f"turn:127.0.0.1:{free_port()}?transport=udp"
    urls = [dead, f"turn:{turn_lab.host}:{turn_lab.port}?transport=tcp"]
    frames = Frames()
    worker = Worker(
        load_config(
            environ={},
            overrides={
                "sfu.slot_hold": "0.5s",
                "ice.turn.urls": urls,
                "ice.turn.secret": turn_lab.secret,
            },
        ),
        "w-turn",
        frames.emit,
    )
    alice, carol = Participant("alice", True), Participant("carol", False)
    username, password = turn_credentials(turn_lab.secret, "carol", 600)
    carol.pc = RTCPeerConnection(
        RTCConfiguration(
            iceServers=[RTCIceServer(urls=urls, username=username, credential=password)],
            iceTransportPolicy=RTCIceTransportPolicy.RELAY,
        )
    )
    try:
        await alice.join(worker, frames)
        await carol.join(worker, frames)
        # One relay candidate each (per m-line): the TCP allocation (the UDP URL never
        # answers).
        offer = carol.pc.localDescription.sdp
        assert offer.count("typ relay") == offer.count("m=audio") == 3
        assert "typ host" not in offer
        assert carol.answer_sdp.count("typ relay") == carol.answer_sdp.count("m=audio")
        await wait_for(lambda: carol.pc.connectionState == "connected", 15)
        alice.speak(True)
        await wait_for(lambda: carol.loud[0] >= 25, 15)
    finally:
        await close_all([alice, carol], worker)


def test_only_the_same_connection_with_new_credentials_is_a_restart() -> None:
    first = "\r\n".join(
        [
            "v=0",
            "o=- 1 1 IN IP4 0.0.0.0",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE 0 1",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "c=IN IP4 0.0.0.0",
            "a=mid:0",
            "a=recvonly",
            "a=rtcp-mux",
            "a=rtpmap:111 opus/48000/2",
            "a=ice-ufrag:{ufrag}",
            "a=ice-pwd:{pwd}",
            "a=fingerprint:sha-256 {print}",
            "a=setup:actpass",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "c=IN IP4 0.0.0.0",
            "a=mid:{mid}",
            "a=sendonly",
            "a=rtcp-mux",
            "a=rtpmap:111 opus/48000/2",
            "a=ice-ufrag:{ufrag}",
            "a=ice-pwd:{pwd}",
            "a=fingerprint:sha-256 {print}",
            "a=setup:actpass",
            "",
        ]
    )
    fp = ":".join(["AB"] * 32)

    def sdp(ufrag: str = "aaaa", pwd: str = "p" * 22, mid: str = "1", print_: str = fp) -> str:
        return first.format(ufrag=ufrag, pwd=pwd, mid=mid, print=print_)

    assert restart_credentials(sdp(), sdp(ufrag="bbbb", pwd="q" * 22)) == ("bbbb", "q" * 22)
    assert restart_credentials(sdp(), sdp()) is None  # same credentials: a renegotiation
    assert restart_credentials(sdp(), sdp(ufrag="bbbb", mid="x")) is None  # other m-lines
    other = ":".join(["CD"] * 32)
    assert restart_credentials(sdp(), sdp(ufrag="bbbb", print_=other)) is None  # a new pc
    assert restart_credentials(None, sdp(ufrag="bbbb")) is None
    assert restart_credentials(sdp(), "not an sdp") is None
