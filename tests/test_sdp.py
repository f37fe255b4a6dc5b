"""server/sdp.py: whether an offer or answer would let its author send media."""

from __future__ import annotations

import pytest
from aiortc import RTCPeerConnection

from yahaml_voice.server.sdp import media_sections, sends_media

HEAD = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


def audio(direction: str | None = None, port: int = 9, extra: str = "") -> str:
    line = f"m=audio {port} UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n"
    if direction:
        line += f"a={direction}\r\n"
    return line + extra


@pytest.mark.parametrize(
    ("sdp", "sends"),
    [
        (HEAD + audio("recvonly"), False),
        (HEAD + audio("inactive"), False),
        (HEAD + audio("sendonly"), True),
        (HEAD + audio("sendrecv"), True),
        # No direction attribute anywhere: sendrecv (RFC 8866 6.7).
        (HEAD + audio(), True),
        # The session-level attribute is every section's default ...
        (HEAD + "a=recvonly\r\n" + audio(), False),
        (HEAD + "a=sendonly\r\n" + audio(), True),
        # ... and a section's own attribute wins over it.
        (HEAD + "a=recvonly\r\n" + audio("sendrecv"), True),
        (HEAD + "a=sendrecv\r\n" + audio("recvonly"), False),
        # Any sending section counts, not just the first.
        (HEAD + audio("recvonly") + audio("sendonly"), True),
        # A rejected section (port 0) sends nothing; a bundle-only one is live.
        (HEAD + audio("sendrecv", port=0), False),
        (HEAD + audio("sendrecv", port=0, extra="a=bundle-only\r\n"), True),
        # Data channels carry no audio; video would still be refused.
        (HEAD + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=sendrecv\r\n", False),
        (HEAD + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n", True),
        # Bare LF line ends, stray spaces and case.
        ((HEAD + audio("SENDONLY")).replace("\r\n", "\n"), True),
        # No media at all.
        (HEAD, False),
        ("garbage", False),
    ],
)
def test_sends_media(sdp: str, sends: bool) -> None:
    assert sends_media(sdp) is sends


def test_sections_report_their_effective_direction() -> None:
    sections = media_sections(HEAD + "a=inactive\r\n" + audio() + audio("sendonly"))
    assert [(s.kind, s.direction) for s in sections] == [
        ("audio", "inactive"),
        ("audio", "sendonly"),
    ]


async def test_real_offers_and_answers_from_aiortc() -> None:
    """A listener's recvonly offer and its answer to a publisher's offer never send;
    a publisher's offer and a forced sendrecv answer do."""
    from tests.voiceclient import ToneTrack

    listener, publisher = RTCPeerConnection(), RTCPeerConnection()
    try:
        listener.addTransceiver("audio", direction="recvonly")
        offer = await listener.createOffer()
        assert not sends_media(offer.sdp)

        publisher.addTrack(ToneTrack(440.0))
        offer = await publisher.createOffer()
        assert sends_media(offer.sdp)
        await publisher.setLocalDescription(offer)

        answerer = RTCPeerConnection()
        try:
            await answerer.setRemoteDescription(publisher.localDescription)
            answer = await answerer.createAnswer()
            assert not sends_media(answer.sdp)
            answerer.getTransceivers()[0].direction = "sendrecv"
            answerer.getTransceivers()[0].sender.replaceTrack(ToneTrack(440.0))
            answer = await answerer.createAnswer()
            assert sends_media(answer.sdp)
        finally:
            await answerer.close()
    finally:
        await listener.close()
        await publisher.close()
