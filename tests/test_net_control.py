"""A directed net end to end: a real server, a real SFU worker child, real aiortc stations.

Net control (W1NCS), three operators and five listeners, each saying its own tone, so a
listener can tell from the frequency whom it hears. What the SFU forwards is checked at
the listeners' ears, never by asking the server what it thinks it does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.redis_fixture import RedisServer
from tests.servers import ServerProcess, mint
from tests.test_sfu_integration import sfu_connected, until
from tests.voiceclient import ApiFailure, VoiceClient

ROOM = "net"
NCS_TONE = 300.0
OPERATOR_TONES = (500.0, 700.0, 900.0)
LISTENER_TONES = (1300.0, 1500.0, 1700.0, 1900.0, 2100.0)
COURTESY_HZ = 1100


def net_server(server_factory: Callable[..., ServerProcess], **room: Any) -> ServerProcess:
    config = {
        "server": {"grace_period": "5s"},
        "rooms": [
            {
                "id": ROOM,
                "floor": "directed",
                "max_participants": 20,
                "courtesy_tone_hz": COURTESY_HZ,
                **room,
            }
        ],
        "sfu": {"slots": 3, "slot_hold": "0.3s", "ice_addresses": ["127.0.0.1"]},
        "limits": {"signals_per_second": 0, "joins_per_second": 0},
    }
    server = server_factory(config, workers=1)
    server.wait_healthy(timeout=60, workers=1)
    return server


class Net:
    """The stations of one net, seated and on the SFU."""

    def __init__(self, server: ServerProcess, factory: Callable[..., VoiceClient]) -> None:
        self.server = server
        self.ncs = factory(server.url, tone=NCS_TONE)
        self.operators = [factory(server.url, tone=f) for f in OPERATOR_TONES]
        self.listeners = [factory(server.url, tone=f) for f in LISTENER_TONES]

    @property
    def everyone(self) -> list[VoiceClient]:
        return [self.ncs, *self.operators, *self.listeners]

    async def seat(self) -> None:
        for client in self.everyone:
            assert client.track is not None
            client.track.muted = True
        self.ncs.use_token(mint("W1NCS", role="ncs"))
        for i, op in enumerate(self.operators):
            op.use_token(mint(f"K{i}OPR", role="operator"))
        for i, li in enumerate(self.listeners):
            li.use_token(mint(f"N{i}LIS", role="listener"))
        for client in self.everyone:
            await client.connect()
            await client.join(ROOM)
        await until(lambda: all(sfu_connected(c) for c in self.everyone), 60, "all on the SFU")

    async def post(self, who: VoiceClient, path: str, body: Any = None) -> Any:
        return await who.request("POST", f"/api/voice-rooms/{ROOM}/{path}", body or {})

    async def floor(self, who: VoiceClient) -> dict[str, Any]:
        answer: dict[str, Any] = await who.request("GET", f"/api/voice-rooms/{ROOM}/floor")
        return answer

    def heard_by_listeners(self, tone: float, since: float) -> list[int]:
        return [li.heard_tone(tone, since=since) for li in self.listeners]

    async def all_listeners_hear(self, tone: float, timeout: float = 15.0) -> None:
        await asyncio.gather(
            *(li.wait_tone(tone, frames=10, timeout=timeout) for li in self.listeners)
        )

    async def nobody_hears(self, tone: float, seconds: float = 2.0) -> None:
        """Listen for `seconds` and check no listener heard `tone` in that time."""
        since = time.monotonic()
        await asyncio.sleep(seconds)
        heard = self.heard_by_listeners(tone, since)
        assert not any(heard), f"{tone} Hz heard: {heard}"

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.everyone), return_exceptions=True)


@pytest.fixture
async def net(
    server_factory: Callable[..., ServerProcess],
    client_factory: Callable[..., VoiceClient],
    loopback_ice: None,
    request: pytest.FixtureRequest,
) -> Any:
    room = getattr(request, "param", {})
    server = net_server(server_factory, **room)
    stations = Net(server, client_factory)
    await stations.seat()
    try:
        yield stations
    finally:
        await stations.close()


async def test_only_the_floor_is_heard_and_net_control_always(net: Net) -> None:
    op1, op2, _ = net.operators
    assert op1.track is not None and op2.track is not None
    # An operator without the floor keys up and keeps sending: nobody hears it.
    op1.track.muted = False
    await net.nobody_hears(OPERATOR_TONES[0], seconds=2.5)
    # Net control can always talk.
    assert net.ncs.track is not None
    net.ncs.track.muted = False
    await net.all_listeners_hear(NCS_TONE)
    net.ncs.track.muted = True

    # Granted: every listener hears that operator (and the granted one holds the floor).
    await net.post(net.ncs, "floor/grant", {"participantId": op1.participant_id})
    await net.all_listeners_hear(OPERATOR_TONES[0])
    floor = await net.floor(op2)
    assert [h["participantId"] for h in floor["holders"]] == [op1.participant_id]

    # Revoked: they stop hearing it at once, though it keeps sending.
    await net.post(net.ncs, "floor/revoke", {"participantId": op1.participant_id})
    await asyncio.sleep(0.5)
    await net.nobody_hears(OPERATOR_TONES[0], seconds=2.0)


async def test_queue_order_and_grant_next(net: Net) -> None:
    op1, op2, op3 = net.operators
    await net.post(op1, "floor/request", {"kind": "comment"})
    await net.post(op2, "floor/request", {"kind": "checkin"})
    await net.post(op3, "floor/request", {"kind": "priority"})
    floor = await net.floor(net.listeners[0])
    assert [e["participantId"] for e in floor["queue"]] == [
        op3.participant_id,
        op1.participant_id,
        op2.participant_id,
    ]
    # Every member sees it: the last floorChanged a listener got says the same.
    await until(
        lambda: any(
            e.get("type") == "floorChanged" and len(e["data"]["floor"]["queue"]) == 3
            for e in net.listeners[0].events
        ),
        5,
        "floorChanged with the queue",
    )
    # Grant next: the priority request first.
    await net.post(net.ncs, "floor/grant", {})
    assert op3.track is not None
    op3.track.muted = False
    await net.all_listeners_hear(OPERATOR_TONES[2])
    # A listener can never be granted the floor, nor ask for it.
    listener = net.listeners[0]
    with pytest.raises(ApiFailure) as refused:
        await net.post(net.ncs, "floor/grant", {"participantId": listener.participant_id})
    assert refused.value.status == 403
    with pytest.raises(ApiFailure) as refused:
        await net.post(listener, "floor/request", {"kind": "traffic"})
    assert refused.value.status == 403
    # Nor can an operator grant anything.
    with pytest.raises(ApiFailure) as refused:
        await net.post(op1, "floor/grant", {"participantId": op1.participant_id})
    assert refused.value.status == 403


@pytest.mark.parametrize("net", [{"priority_break_in": True}], indirect=True)
async def test_priority_breaks_in_and_the_holder_resumes(net: Net) -> None:
    op1, op2, _ = net.operators
    assert op1.track is not None and op2.track is not None
    await net.post(net.ncs, "floor/grant", {"participantId": op1.participant_id})
    op1.track.muted = False
    await net.all_listeners_hear(OPERATOR_TONES[0])
    # Emergency traffic: granted at once, the holder paused.
    await net.post(op2, "floor/request", {"kind": "priority"})
    op2.track.muted = False
    await net.all_listeners_hear(OPERATOR_TONES[1])
    await asyncio.sleep(0.5)
    await net.nobody_hears(OPERATOR_TONES[0], seconds=1.5)
    floor = await net.floor(op1)
    paused = {h["participantId"]: h["paused"] for h in floor["holders"]}
    assert paused == {op1.participant_id: True, op2.participant_id: False}
    # The priority station is done: the paused holder resumes.
    op2.track.muted = True
    await net.post(op2, "floor/release")
    await net.all_listeners_hear(OPERATOR_TONES[0])


@pytest.mark.parametrize("net", [{"tot": "2s", "tot_reset": "1s"}], indirect=True)
async def test_time_out_timer_cuts_off_and_locks_out(net: Net) -> None:
    op1 = net.operators[0]
    assert op1.track is not None
    await net.post(net.ncs, "floor/grant", {"participantId": op1.participant_id})
    op1.track.muted = False
    await net.all_listeners_hear(OPERATOR_TONES[0])
    # Still transmitting after 2 s: cut off, and told so.
    await op1.wait_event("talkerCut", timeout=10)
    await asyncio.sleep(0.5)
    await net.nobody_hears(OPERATOR_TONES[0], seconds=1.5)
    # Keying on locks it out; 1 s of silence resets the timer and it is heard again.
    op1.track.muted = True
    await asyncio.sleep(1.6)
    op1.track.muted = False
    await net.all_listeners_hear(OPERATOR_TONES[0])


async def test_courtesy_tone_after_the_holder_unkeys(net: Net) -> None:
    op1 = net.operators[0]
    assert op1.track is not None
    await net.post(net.ncs, "floor/grant", {"participantId": op1.participant_id})
    op1.track.muted = False
    await net.all_listeners_hear(OPERATOR_TONES[0])
    await asyncio.sleep(1.0)  # an over, not a blip (shorter ones get no tone)
    before = [li.heard_tone(COURTESY_HZ) for li in net.listeners]
    op1.track.muted = True  # unkey
    await until(
        lambda: all(
            li.heard_tone(COURTESY_HZ) > b for li, b in zip(net.listeners, before, strict=True)
        ),
        5,
        f"every listener hears the {COURTESY_HZ} Hz courtesy tone",
    )


async def test_net_control_mute_holds_against_a_client_that_keeps_sending(net: Net) -> None:
    op1 = net.operators[0]
    assert op1.track is not None
    await net.post(net.ncs, "floor/grant", {"participantId": op1.participant_id})
    op1.track.muted = False
    await net.all_listeners_hear(OPERATOR_TONES[0])
    await net.post(net.ncs, "moderation/mute", {"participantId": op1.participant_id, "muted": True})
    await asyncio.sleep(0.5)
    await net.nobody_hears(OPERATOR_TONES[0], seconds=2.0)
    with pytest.raises(ApiFailure) as refused:
        await op1.request("POST", f"/api/voice-rooms/{ROOM}/mute", {"isMuted": False})
    assert refused.value.status == 403
    await net.post(
        net.ncs, "moderation/mute", {"participantId": op1.participant_id, "muted": False}
    )
    await net.all_listeners_hear(OPERATOR_TONES[0])


async def test_a_removed_station_cannot_rejoin(net: Net) -> None:
    op1 = net.operators[0]
    assert op1.token is not None
    removed_token = op1.token
    await net.post(
        net.ncs, "moderation/remove", {"participantId": op1.participant_id, "reason": "jamming"}
    )
    await until(
        lambda: any(
            e.get("type") == "moderation" and e["data"]["action"] == "remove"
            for e in net.listeners[0].events
        ),
        5,
        "every member sees the removal",
    )
    with pytest.raises(ApiFailure) as refused:
        await op1.request("POST", f"/api/voice-rooms/{ROOM}/join", {"joinMode": "operator"})
    assert refused.value.status in (401, 403)
    # A fresh token for the same callsign is still kept out of this net.
    again = VoiceClient(net.server.url, auto_media=False)
    try:
        again.use_token(mint("K0OPR", role="operator"))
        assert again.token != removed_token
        with pytest.raises(ApiFailure) as refused:
            await again.join(ROOM)
        assert refused.value.status == 403
    finally:
        await again.close()


@pytest.mark.redis
async def test_a_grant_on_one_server_is_enforced_for_a_talker_on_another(
    server_factory: Callable[..., ServerProcess],
    client_factory: Callable[..., VoiceClient],
    loopback_ice: None,
) -> None:
    """Two server processes over Redis; the SFU worker hangs off the first. The operator's
    socket, REST calls and SFU signalling go through the second; net control grants
    through the first; the listeners (on both) hear the operator only once granted."""
    with RedisServer() as redis:
        env = {"YAHAML_VOICE_REDIS__URL": redis.url}
        config = {
            "rooms": [{"id": ROOM, "floor": "directed", "courtesy_tone": False}],
            "sfu": {"slots": 3, "ice_addresses": ["127.0.0.1"]},
        }
        first = server_factory(config, env=env, name="first", workers=1)
        first.wait_healthy(timeout=60, workers=1)
        second = server_factory(config, env=env, name="second", workers=0)
        ncs = client_factory(first.url, tone=NCS_TONE)
        operator = client_factory(second.url, tone=OPERATOR_TONES[0])
        ears = [
            client_factory(first.url, tone=LISTENER_TONES[0]),
            client_factory(second.url, tone=LISTENER_TONES[1]),
        ]
        stations = [ncs, operator, *ears]
        ncs.use_token(mint("W1NCS", role="ncs"))
        operator.use_token(mint("K0OPR", role="operator"))
        for i, ear in enumerate(ears):
            ear.use_token(mint(f"N{i}LIS", role="listener"))
        for station in stations:
            assert station.track is not None
            station.track.muted = station is not operator
            await station.connect()
            await station.join(ROOM)
        await until(lambda: all(sfu_connected(s) for s in stations), 60, "all on the SFU")
        since = time.monotonic()
        await asyncio.sleep(2.0)
        assert [e.heard_tone(OPERATOR_TONES[0], since=since) for e in ears] == [0, 0]
        await ncs.request(
            "POST",
            f"/api/voice-rooms/{ROOM}/floor/grant",
            {"participantId": operator.participant_id},
        )
        await asyncio.gather(*(e.wait_tone(OPERATOR_TONES[0], frames=10) for e in ears))
        await ncs.request("POST", f"/api/voice-rooms/{ROOM}/floor/revoke", {})
        await asyncio.sleep(0.5)
        since = time.monotonic()
        await asyncio.sleep(1.5)
        assert [e.heard_tone(OPERATOR_TONES[0], since=since) for e in ears] == [0, 0]
