"""Request -> grant -> first audio at the listeners, in a directed net on a real SFU.

One `yahaml-voice serve` with one SFU worker child, a directed room, net control, one
operator keyed the whole time (its microphone sends a tone; the SFU drops it until it holds
the floor) and several listeners. Each round: the operator requests the floor, net control
grants it, and every listener's first decoded frame of the operator's tone is timed; then
net control revokes and the listeners go quiet. Wall clock on loopback, so medians and p95.

    python -m bench grant [--grants 50] [--listeners 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.join_latency import summary
from tests.servers import ServerProcess, mint
from tests.voiceclient import SFU, VoiceClient
from yahaml_voice.sfu.aiortc_private import restrict_ice_addresses

RESULTS = Path(__file__).resolve().parent / "results"
ROOM = "net"
TONE = 700.0


async def _until(condition: Any, timeout: float, what: str) -> None:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise TimeoutError(what)
        await asyncio.sleep(0.01)


async def run(grants: int, listeners: int) -> dict[str, Any]:
    restrict_ice_addresses(["127.0.0.1"])
    config = {
        "rooms": [{"id": ROOM, "floor": "directed", "courtesy_tone": False, "tot": 0}],
        "sfu": {"slots": 3, "slot_hold": "0.3s", "ice_addresses": ["127.0.0.1"]},
        "limits": {"signals_per_second": 0, "joins_per_second": 0},
    }
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp), config, workers=1)
        server.start()
        server.wait_healthy(timeout=60, workers=1)
        ncs = VoiceClient(server.url, tone=300)
        operator = VoiceClient(server.url, tone=TONE)
        ears = [VoiceClient(server.url, tone=1500 + 100 * i) for i in range(listeners)]
        everyone = [ncs, operator, *ears]
        try:
            ncs.use_token(mint("W1NCS", role="ncs"))
            operator.use_token(mint("K1OPR", role="operator"))
            for i, ear in enumerate(ears):
                ear.use_token(mint(f"N{i}LIS", role="listener"))
            for client in everyone:
                assert client.track is not None
                client.track.muted = client is not operator
                await client.connect()
                await client.join(ROOM)
            await _until(
                lambda: all(c.peers.get(SFU) and c.mode == "sfu" for c in everyone),
                60,
                "everyone on the SFU",
            )
            await _until(
                lambda: all(
                    p.pc.connectionState == "connected" for p in (c.peers[SFU] for c in everyone)
                ),
                60,
                "SFU connections up",
            )
            base = f"/api/voice-rooms/{ROOM}/floor"
            granted: list[float] = []
            to_audio: list[float] = []
            total: list[float] = []
            for _ in range(grants):
                before = [ear.heard_tone(TONE) for ear in ears]
                start = time.monotonic()
                await operator.request("POST", f"{base}/request", {"kind": "comment"})
                await ncs.request("POST", f"{base}/grant", {})
                grant_done = time.monotonic()
                firsts: list[float | None] = [None] * len(ears)
                while any(f is None for f in firsts):
                    now = time.monotonic()
                    if now - start > 10:
                        raise TimeoutError("no audio within 10 s of a grant")
                    for i, ear in enumerate(ears):
                        if firsts[i] is None and ear.heard_tone(TONE) > before[i]:
                            firsts[i] = now
                    await asyncio.sleep(0.002)
                heard = [f for f in firsts if f is not None]
                granted.append(grant_done - start)
                to_audio += [f - grant_done for f in heard]
                total += [f - start for f in heard]
                await ncs.request("POST", f"{base}/revoke", {})
                await asyncio.sleep(0.6)  # the jitter buffers drain; silence again
        finally:
            await asyncio.gather(*(c.close() for c in everyone), return_exceptions=True)
            server.stop()
    return {
        "benchmark": "floor_grant",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {"grants": grants, "listeners": listeners},
        "request_and_grant_calls": summary(granted),
        "grant_to_first_audio": summary(to_audio),
        "request_to_first_audio": summary(total),
        "notes": "loopback; two REST calls (operator request, NCS grant), then the server's "
        "floor frame to the worker and the first forwarded Opus frame decoded at each "
        "listener (one sample per listener per grant)",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench grant", description=__doc__)
    parser.add_argument("--grants", type=int, default=50)
    parser.add_argument("--listeners", type=int, default=5)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.grants, args.listeners))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "floor_grant.json").write_text(json.dumps(result, indent=2) + "\n")
    for key in ("request_and_grant_calls", "grant_to_first_audio", "request_to_first_audio"):
        row = result[key]
        print(f"{key:<28}{row['n']:>5}{row['median_ms']:>10} ms median{row['p95_ms']:>10} ms p95")
    return 0
