"""Probe the multi-host example converged onto containers (tests/deploy/multihost.sh).

Everything is checked from this machine, through the podman networks, as the site's users
would reach it: the proxy's HTTPS (the test CA's certificate verified), two real aiortc
clients (tests/voiceclient.py) that join one room and hear each other's tone through an
SFU worker on an SFU host (not the signaling host) and through a rolling restart of that
host's workers (each drained: the room moves before the worker stops), coturn's allocations on the TURN host
relaying to this machine, and Redis on the signaling host refusing a client without the
password (asked from an SFU host on the private network: the firewall lets nothing else
reach it). The TURN and Redis probes are verify.py's (the single-host deploy test).

Prints one line per check and exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from tests.deploy.verify import (  # noqa: E402
    Report,
    allocate_error,
    allocation,
    ice_turn,
    permission,
    relay_roundtrip,
    stun_binding,
    url_port,
)
from tests.voiceclient import SFU, VoiceClient  # noqa: E402

CLIS = [
    "/opt/yahaml-voice/current/venv/bin/yahaml-voice",
    "/opt/yahaml-voice/venv/bin/yahaml-voice",
]
CONFIG = "/etc/yahaml-voice/yahaml-voice.yaml"
TONES = {"W1AW": 440.0, "G4ABC": 660.0}


def podman(
    cfg: dict[str, Any], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cfg["podman"], *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def mint_token(cfg: dict[str, Any], callsign: str) -> str | None:
    """A token from the CLI on the signaling host, as the sysadmin mints one."""
    for cli in CLIS:
        out = podman(
            cfg,
            "exec",
            cfg["signal"],
            cli,
            "--config",
            CONFIG,
            "token",
            "--callsign",
            callsign,
            "--room",
            "*",
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.splitlines()[0]
    return None


def expected_workers(cfg: dict[str, Any]) -> int:
    """One worker per core on each SFU host (the roles' default)."""
    return sum(int(podman(cfg, "exec", name, "nproc").stdout) for name in cfg["sfu_hosts"])


async def check_web(cfg: dict[str, Any], http: httpx.AsyncClient, report: Report) -> None:
    want = expected_workers(cfg)
    deadline = time.monotonic() + 60
    health: dict[str, Any] = {}
    status = 0
    while time.monotonic() < deadline:
        try:
            response = await http.get("/healthz")
            status, health = response.status_code, response.json()
            if status == 200 and health.get("workers", 0) >= want:
                break
        except (httpx.HTTPError, ValueError):
            pass
        await asyncio.sleep(1)
    report.check(
        "https /healthz through the proxy (test CA's certificate verified)",
        status == 200 and health.get("status") == "ok",
        f"{status} {health}",
    )
    report.check("server state in Redis", health.get("store") == "redis", str(health.get("store")))
    report.check(
        f"{want} SFU workers of the two SFU hosts registered through the proxy",
        health.get("workers") == want,
        f"workers={health.get('workers')}",
    )


def remote_address(client: VoiceClient) -> str | None:
    """The SFU end of the client's nominated ICE pair (aiortc/aioice internals)."""
    peer = client.peers.get(SFU)
    if peer is None:
        return None
    for transceiver in peer.pc.getTransceivers():
        ice = transceiver.receiver.transport.transport
        nominated = getattr(ice._connection, "_nominated", {})
        for pair in nominated.values():
            return str(pair.remote_candidate.host)
    return None


async def check_clients(cfg: dict[str, Any], report: Report) -> dict[str, Any] | None:
    """Two clients in room `net` (sfu_threshold 2): each hears the other through a worker
    on an SFU host. Returns the ICE servers the server handed out."""
    clients: list[VoiceClient] = []
    try:
        for callsign, tone in TONES.items():
            token = mint_token(cfg, callsign)
            if not report.check(
                f"token for {callsign} from the CLI on the signaling host", bool(token)
            ):
                return None
            http = httpx.AsyncClient(base_url=cfg["url"], verify=cfg["ssl"], timeout=15.0)
            client = VoiceClient(cfg["url"], tone=tone, http=http)
            client.use_token(str(token))
            clients.append(client)
            await client.connect()
            await client.join("net")
        report.check("two clients joined room net through the proxy", True)
        for _ in range(150):  # 30 s
            if all(c.mode == "sfu" for c in clients):
                break
            await asyncio.sleep(0.2)
        report.check("the room went to an SFU worker", all(c.mode == "sfu" for c in clients))
        alice, bob = clients
        for listener, talker in ((alice, "G4ABC"), (bob, "W1AW")):
            try:
                took = await listener.wait_tone(TONES[talker], frames=25, timeout=30)
                report.check(
                    f"{listener.callsign} hears {talker}'s {TONES[talker]:.0f} Hz through the SFU",
                    True,
                    f"25 loud frames in {took:.1f}s",
                )
            except TimeoutError as exc:
                report.check(f"{listener.callsign} hears {talker} through the SFU", False, str(exc))
        # The SFU hosts' addresses, public and private: this machine has the private
        # network's gateway address too (podman's bridge), so ICE may pick either path.
        sfu_addresses = {
            address: host
            for host, addresses in cfg["sfu_hosts"].items()
            for address in ([addresses] if isinstance(addresses, str) else addresses)
        }
        for client in clients:
            address = remote_address(client)
            report.check(
                f"{client.callsign}'s media goes to an SFU worker on an SFU host",
                address in sfu_addresses,
                f"{address} ({sfu_addresses.get(str(address), 'not an SFU host')})",
            )
        answer = await alice.request("GET", "/api/ice-servers")
        await check_rolling_restart(cfg, clients, sfu_addresses, report)
        return answer
    except Exception as exc:  # the check reports whatever went wrong
        report.check("clients through the proxy and an SFU host", False, repr(exc))
        return None
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()
            with contextlib.suppress(Exception):
                await client.http.aclose()


async def check_rolling_restart(
    cfg: dict[str, Any],
    clients: list[VoiceClient],
    sfu_addresses: dict[str, str],
    report: Report,
) -> None:
    """What an upgrade's handlers do on the SFU host carrying the room: stop and start each
    worker in turn (yv-direct, SIGTERM: a drain). The room must leave a worker before that
    worker has stopped (a roomModeChanged while its stop still runs), and after each restart
    both clients keep their seats and hear each other again."""
    host = sfu_addresses.get(str(remote_address(clients[0])))
    if not report.check("the SFU host carrying the room is known", host is not None):
        return
    ids = [c.participant_id for c in clients]
    moved_in_time = False
    for instance in range(1, int(podman(cfg, "exec", host, "nproc").stdout) + 1):
        unit = f"yahaml-voice-sfu@{instance}"
        seen = [len(c.events) for c in clients]
        began = time.monotonic()
        stop = await asyncio.to_thread(podman, cfg, "exec", host, "yv-direct", "stop", unit)
        stopped = time.monotonic()
        report.check(f"{host}: {unit} stopped (drained)", stop.returncode == 0, stop.stderr[-300:])
        moves = [
            at
            for c, since in zip(clients, seen, strict=True)
            for e, at in zip(c.events[since:], c.event_times[since:], strict=False)
            if e["type"] == "roomModeChanged"
        ]
        moved_in_time = moved_in_time or any(began <= at <= stopped for at in moves)
        start = await asyncio.to_thread(podman, cfg, "exec", host, "yv-direct", "start", unit)
        report.check(f"{host}: {unit} started again", start.returncode == 0, start.stderr[-300:])
        for listener, talker in ((clients[0], "G4ABC"), (clients[1], "W1AW")):
            try:
                took = await listener.wait_tone(TONES[talker], frames=25, timeout=30)
                report.check(
                    f"after {unit} on {host}: {listener.callsign} hears {talker} again",
                    True,
                    f"25 loud frames in {took:.1f}s",
                )
            except TimeoutError as exc:
                report.check(
                    f"after {unit} on {host}: {listener.callsign} hears {talker}", False, str(exc)
                )
    report.check(
        "rolling restart: the room moved off a worker before that worker stopped (drain)",
        moved_in_time,
    )
    left = [e for c in clients for e in c.events if e["type"] == "participantLeft"]
    report.check(
        "rolling restart: seats kept (same participant ids, nobody left)",
        [c.participant_id for c in clients] == ids and not left,
        str(left),
    )


async def check_turn(cfg: dict[str, Any], answer: dict[str, Any], report: Report) -> None:
    turn = ice_turn(answer)
    urls = turn["urls"]
    udp = url_port(urls, "turn", "udp")
    tcp = url_port(urls, "turn", "tcp")
    tls = url_port(urls, "turns", "tcp")
    report.check(
        "TURN URLs name the TURN host",
        bool(udp and tcp and tls) and all(cfg["turn"] in u for u in urls),
        " ".join(urls),
    )
    if not (udp and tcp and tls):
        return
    user, password = turn["username"], turn["credential"]
    mapped = await stun_binding((cfg["turn"], udp[1]))
    report.check("STUN binding on the TURN host", mapped is not None, str(mapped))
    async with allocation(udp, user, password) as proto:
        problem = await relay_roundtrip(proto, cfg["client_ip"])
        report.check(
            "TURN/UDP allocation on the TURN host relays traffic",
            not problem,
            problem or f"relayed via {proto.relayed_address}",
        )
        code = await permission(proto, cfg["private_peer"])
        report.check(
            f"the relay refuses the private peer {cfg['private_peer']}", code == 403, str(code)
        )
    async with allocation(tcp, user, password, transport="tcp") as proto:
        problem = await relay_roundtrip(proto, cfg["client_ip"])
        report.check("TURN/TCP allocation relays traffic", not problem, problem)
    for port in sorted({tls[1], 443}):
        label = f"TURN/TLS on port {port}" + (" (alt_tls_443)" if port == 443 else "")
        try:
            async with allocation(
                (cfg["turn"], port), user, password, transport="tcp", tls=cfg["ssl"]
            ) as proto:
                problem = await relay_roundtrip(proto, cfg["client_ip"])
                report.check(f"{label} relays traffic", not problem, problem)
        except Exception as exc:  # the check reports whatever went wrong
            report.check(f"{label} relays traffic", False, repr(exc))
    report.check(
        "a turns: URL on 443 (alt_tls_443 for the whole site)",
        f"turns:{cfg['turn']}:443?transport=tcp" in urls,
        " ".join(urls),
    )
    code = await allocate_error(udp, user, password + "x")
    report.check("a wrong TURN password gets 401", code == 401, str(code))


REDIS_PROBE = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(b"PING\\r\\n"); print(s.recv(200).decode().strip())
pw = sys.argv[3].encode()
s.sendall(b"*2\\r\\n$4\\r\\nAUTH\\r\\n$%d\\r\\n%s\\r\\n*1\\r\\n$4\\r\\nPING\\r\\n" % (len(pw), pw))
import time; time.sleep(0.5); print(s.recv(200).decode().strip().replace("\\r\\n", " "))
"""


def check_redis(cfg: dict[str, Any], report: Report) -> None:
    sfu = next(iter(cfg["sfu_hosts"]))
    out = podman(
        cfg, "exec", sfu, "python3", "-c", REDIS_PROBE, cfg["redis"], "6379", cfg["redis_password"]
    )
    lines = out.stdout.splitlines()
    report.check(
        f"Redis on the signaling host refuses an unauthenticated client ({sfu} -> {cfg['redis']})",
        bool(lines) and lines[0].startswith("-NOAUTH"),
        (lines[0] if lines else out.stderr.strip()[-200:]),
    )
    report.check(
        "Redis answers with the password over the private network",
        len(lines) > 1 and lines[1] == "+OK +PONG",
        lines[1] if len(lines) > 1 else "",
    )
    try:
        with socket.create_connection((cfg["proxy"], 6379), timeout=3):
            reached = "connected"
    except OSError as exc:
        reached = ""
        detail = repr(exc)
    report.check(
        "Redis is not reachable on the signaling host's public address",
        not reached,
        reached or detail,
    )


async def network_checks(cfg: dict[str, Any], report: Report) -> None:
    async with httpx.AsyncClient(base_url=cfg["url"], verify=cfg["ssl"], timeout=15.0) as http:
        await check_web(cfg, http, report)
    answer = await check_clients(cfg, report)
    if answer:
        await check_turn(cfg, answer, report)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", help="JSON written by multihost.sh (addresses, paths)")
    cfg = json.loads(Path(parser.parse_args().config).read_text())
    # websockets and aiortc's TLS use OpenSSL's defaults: the test CA (as the hosts trust it).
    os.environ["SSL_CERT_FILE"] = cfg["ca"]
    cfg["ssl"] = ssl.create_default_context(cafile=cfg["ca"])
    cfg["url"] = f"https://{cfg['proxy']}"
    cfg["redis_password"] = (Path(cfg["secrets_dir"]) / "redis_password").read_text().strip()
    report = Report()
    asyncio.run(network_checks(cfg, report))
    check_redis(cfg, report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
