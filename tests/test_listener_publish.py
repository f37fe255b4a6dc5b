"""Roles in mesh mode: a listener whose client tries to send audio is refused by the server.

Real aiortc peers (tests/voiceclient.py) through a real server process. Mallory joins as a
listener but ignores it and offers (and answers) with audio to send: every such signal is
refused with 403 `cannot_publish` and never reaches anyone. A well-behaved listener still
hears the operators.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiortc import RTCSessionDescription

from tests.servers import ServerProcess
from tests.voiceclient import ApiFailure, VoiceClient
from yahaml_voice.server.sdp import sends_media


async def refused(call: object) -> None:
    with pytest.raises(ApiFailure) as info:
        await call  # type: ignore[misc]
    assert info.value.status == 403 and info.value.body["error"] == "cannot_publish"


async def test_listener_sending_audio_is_refused_in_mesh(
    server: ServerProcess, client_factory: Callable[..., VoiceClient], loopback_ice: None
) -> None:
    alice = client_factory(server.url, tone=440)
    await alice.login("W1AW")
    await alice.connect()
    await alice.join("shack")

    mallory = client_factory(server.url, tone=660, auto_media=False)
    mallory.ignore_role = True
    await mallory.login("N0BAD")
    await mallory.connect()
    joined = await mallory.join("shack", join_mode="listener")
    assert joined["participant"]["canPublish"] is False
    assert mallory.track is not None

    # Offers that would send: sendrecv (addTrack) and sendonly.
    await refused(mallory.offer_to(str(alice.participant_id)))
    pc = mallory._new_pc("probe").pc
    pc.addTransceiver(mallory.track.copy(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    assert sends_media(pc.localDescription.sdp)
    sdp = {"type": "offer", "sdp": pc.localDescription.sdp}
    await refused(mallory.signal("offer", sdp, to=alice.participant_id))
    # ... nor to everyone at once.
    await refused(mallory.signal("offer", sdp))

    # An operator joining later offers to mallory; a sending answer is refused too.
    carol = client_factory(server.url, tone=550)
    await carol.login("K1ABC")
    await carol.connect()
    await carol.join("shack")
    offer = await mallory.wait_event(
        "signal", lambda e: e["data"]["message"]["from"] == carol.participant_id
    )
    answerer = mallory._new_pc(str(carol.participant_id))
    await answerer.pc.setRemoteDescription(
        RTCSessionDescription(offer["data"]["message"]["data"]["sdp"], "offer")
    )
    transceiver = answerer.pc.getTransceivers()[0]
    transceiver.sender.replaceTrack(mallory.track.copy())
    transceiver.direction = "sendrecv"
    answer = await answerer.pc.createAnswer()
    assert sends_media(answer.sdp)
    await refused(
        mallory.signal("answer", {"type": "answer", "sdp": answer.sdp}, to=carol.participant_id)
    )
    # The same answer as recvonly is what a listener may send: accepted.
    transceiver.direction = "recvonly"
    answer = await answerer.pc.createAnswer()
    await answerer.pc.setLocalDescription(answer)
    await mallory.signal(
        "answer",
        {"type": "answer", "sdp": answerer.pc.localDescription.sdp},
        to=carol.participant_id,
    )

    # A listener that keeps to its role hears the operators; peers carry canPublish.
    bob = client_factory(server.url, tone=880)
    await bob.login("G4ABC")
    await bob.connect()
    answer = await bob.join("shack", join_mode="listener")
    can_publish = {p["id"]: p["canPublish"] for p in answer["peers"]}
    assert can_publish == {
        alice.participant_id: True,
        mallory.participant_id: False,
        carol.participant_id: True,
    }
    await bob.wait_audio(alice.participant_id, frames=25)
    await carol.wait_audio(alice.participant_id, frames=25)

    # Nothing that would send ever left mallory through the server, so nobody hears it.
    from_mallory = [
        e["data"]["message"]
        for client in (alice, bob, carol)
        for e in client.events
        if e["type"] == "signal" and e["data"]["message"]["from"] == mallory.participant_id
    ]
    assert [m["type"] for m in from_mallory if m["type"] != "ice-candidate"] == ["answer"]
    assert not any(sends_media(m["data"]["sdp"]) for m in from_mallory if m["type"] == "answer")
    assert mallory.participant_id not in alice.peers
    assert carol.heard_frames(mallory.participant_id) == 0
    # Bob's own client sent recvonly (canPublish false): never refused, and bob is silent.
    assert alice.heard_frames(bob.participant_id) == 0
