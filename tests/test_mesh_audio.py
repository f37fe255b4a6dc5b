"""Two real aiortc peers meet through the server and hear each other (mesh mode)."""

from __future__ import annotations

from collections.abc import Callable

from tests.servers import ServerProcess
from tests.voiceclient import VoiceClient


async def test_two_peers_hear_each_other(
    server: ServerProcess, client_factory: Callable[..., VoiceClient]
) -> None:
    alice = client_factory(server.url, tone=440)
    bob = client_factory(server.url, tone=660)
    await alice.login("W1AW")
    await bob.login("G4ABC/P")
    await alice.connect()
    await bob.connect()

    first = await alice.join("shack")
    assert first["mode"] == "mesh" and first["peers"] == []
    second = await bob.join("shack")  # bob offers to alice
    assert [p["id"] for p in second["peers"]] == [alice.participant_id]
    assert second["peers"][0]["displayName"] == "W1AW"

    joined = await alice.wait_event("participantJoined")
    assert joined["data"]["participant"]["id"] == bob.participant_id

    await alice.wait_audio(bob.participant_id, frames=25)
    await bob.wait_audio(alice.participant_id, frames=25)
    assert alice.peers[bob.participant_id].pc.connectionState == "connected"
    assert bob.peers[alice.participant_id].pc.connectionState == "connected"
    # Every signal alice received was stamped with bob's id by the server.
    signals = [e for e in alice.events if e["type"] == "signal"]
    assert signals and all(e["data"]["message"]["from"] == bob.participant_id for e in signals)
