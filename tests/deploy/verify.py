"""Probe what the deploy test converged on this machine (tests/deploy/run.sh, step "verify").

Every answer is the deployed component's own: nginx's TLS and redirect, the server's
/healthz, browser client (from the installed package) and /api/ice-servers, coturn's allocation, relay, 401 and 403, Redis' NOAUTH
and NOPERM. A second coturn, rendered through the same role task with the PRODUCTION
rules (no loopback peers), shows that private and loopback peers get 403 there too.

Prints one line per check and exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import itertools
import json
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import redis
import websockets
import yaml
from aioice import stun
from aioice.turn import TurnClientTcpProtocol, TurnClientUdpProtocol

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from yahaml_voice.core.processes import stop_process  # noqa: E402
from yahaml_voice.core.tokens import turn_credentials  # noqa: E402

# Peers the relay must refuse in every deployment (RFC 1918, CGNAT, link-local, "this").
PRIVATE_PEERS = ["10.0.0.1", "172.16.0.1", "192.168.1.1", "100.64.0.1", "169.254.1.1", "0.0.0.1"]
# Loopback addresses other than the lab relay's own 127.0.0.1 (allowed-peer-ip there).
LOOPBACK_PEERS = ["127.0.0.2", "127.1.2.3"]


class Report:
    """Collects check results; `ok` is False once any check failed."""

    def __init__(self) -> None:
        self.ok = True

    def check(self, name: str, passed: bool, detail: str = "") -> bool:
        self.ok = self.ok and passed
        print(f"{'ok  ' if passed else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
        return passed


class _SniHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 while SNI and certificate checks use the public name."""

    def __init__(self, name: str, port: int, context: ssl.SSLContext) -> None:
        super().__init__(name, port, context=context, timeout=10)

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def https_get(
    cfg: dict[str, Any],
    path: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = _SniHTTPSConnection(cfg["domain"], cfg["https_port"], cfg["proxy_ssl"])
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def http_get(port: int, path: str, host: str) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        resp.read()
        return resp.status, dict(resp.getheaders())
    finally:
        conn.close()


# ------------------------------------------------------------------------------------ TURN


@contextlib.asynccontextmanager
async def allocation(
    server: tuple[str, int],
    username: str,
    password: str,
    transport: str = "udp",
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[TurnClientUdpProtocol | TurnClientTcpProtocol]:
    """A TURN allocation by aioice's client; deleted on exit."""
    loop = asyncio.get_running_loop()
    proto: TurnClientUdpProtocol | TurnClientTcpProtocol
    if transport == "udp":
        _, proto = await loop.create_datagram_endpoint(
            lambda: TurnClientUdpProtocol(server, username, password, 600, 300),
            remote_addr=server,
        )
    else:
        _, proto = await loop.create_connection(
            lambda: TurnClientTcpProtocol(server, username, password, 600, 300),
            host=server[0],
            port=server[1],
            ssl=tls,
        )
    try:
        await asyncio.wait_for(proto.connect(), 10)
        yield proto
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proto.delete(), 5)
        proto.transport.close()


async def error_code(call: Callable[[], Any]) -> int:
    """200 when the STUN transaction succeeds, else coturn's ERROR-CODE."""
    try:
        await asyncio.wait_for(call(), 10)
    except stun.TransactionFailed as exc:
        return exc.response.error_code or 0
    return 200


async def allocate_error(server: tuple[str, int], username: str, password: str) -> int:
    """coturn's answer to an Allocate with these credentials (200: allocated)."""
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(
        lambda: TurnClientUdpProtocol(server, username, password, 600, 300), remote_addr=server
    )
    try:
        code = await error_code(proto.connect)
        if code == 200:
            await asyncio.wait_for(proto.delete(), 5)
        return code
    finally:
        proto.transport.close()


async def permission(proto: TurnClientUdpProtocol | TurnClientTcpProtocol, peer: str) -> int:
    request = stun.Message(
        message_method=stun.Method.CREATE_PERMISSION, message_class=stun.Class.REQUEST
    )
    request.attributes["XOR-PEER-ADDRESS"] = (peer, 9)
    return await error_code(lambda: proto.request_with_retry(request))


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(b"echo:" + data, addr)  # type: ignore[attr-defined]


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.put_nowait((data, addr))


async def relay_roundtrip(
    proto: TurnClientUdpProtocol | TurnClientTcpProtocol, address: str = "127.0.0.1"
) -> str:
    """Send through the relay to a UDP echo peer on `address` (loopback on one host; the
    test machine's address on the hosts' network in the multi-host test); the echo must
    come back."""
    loop = asyncio.get_running_loop()
    echo_transport, _ = await loop.create_datagram_endpoint(_Echo, local_addr=(address, 0))
    try:
        peer = echo_transport.get_extra_info("sockname")
        receiver = _Receiver()
        proto.receiver = receiver
        for i in range(5):
            await proto.send_data(f"ping {i}".encode(), peer)
        got = []
        for _ in range(5):
            data, _addr = await asyncio.wait_for(receiver.got.get(), 5)
            got.append(data)
        expected = {f"echo:ping {i}".encode() for i in range(5)}
        if set(got) != expected:
            return f"unexpected payloads {got!r}"
        return ""
    finally:
        echo_transport.close()


async def stun_binding(server: tuple[str, int]) -> tuple[str, int] | None:
    """XOR-MAPPED-ADDRESS from a plain STUN Binding request (None: no answer)."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()

    class _Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            if not answer.done():
                answer.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(_Client, remote_addr=server)
    try:
        request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        transport.sendto(bytes(request))
        message = stun.parse_message(await asyncio.wait_for(answer, 5))
        mapped = message.attributes.get("XOR-MAPPED-ADDRESS")
        local = transport.get_extra_info("sockname")
        return tuple(mapped) if mapped and tuple(mapped) == tuple(local[:2]) else None
    except TimeoutError:
        return None
    finally:
        transport.close()


def ice_turn(answer: dict[str, Any]) -> dict[str, Any]:
    for server in answer.get("iceServers", []):
        if server.get("username"):
            return dict(server)
    raise ValueError(f"no TURN server with credentials in {answer!r}")


def url_port(urls: list[str], scheme: str, transport: str) -> tuple[str, int] | None:
    for url in urls:
        match = re.match(rf"^{scheme}:([^:?]+):(\d+)\?transport={transport}$", url)
        if match:
            return match.group(1), int(match.group(2))
    return None


# -------------------------------------------------------------------------- the checks


async def check_web(cfg: dict[str, Any], report: Report) -> str | None:
    """Proxy, TLS, server, Redis-backed store, SFU workers; returns an operator token."""
    deadline = time.monotonic() + 30
    health: dict[str, Any] = {}
    status = 0
    while time.monotonic() < deadline:
        try:
            status, _, body = https_get(cfg, "/healthz")
            health = json.loads(body)
            if status == 200 and health.get("workers", 0) >= cfg["sfu_workers"]:
                break
        except (OSError, ValueError):
            pass
        await asyncio.sleep(0.5)
    report.check(
        "https /healthz through nginx (cert verified for the public name)",
        status == 200 and health.get("status") == "ok",
        f"{status} {health}",
    )
    report.check("server state in Redis", health.get("store") == "redis", str(health.get("store")))
    report.check("token auth mode", health.get("authMode") == "token", str(health.get("authMode")))
    report.check(
        f"{cfg['sfu_workers']} SFU workers registered (one per core)",
        health.get("workers") == cfg["sfu_workers"],
        f"workers={health.get('workers')}",
    )

    status, headers = http_get(cfg["http_port"], "/some/path?x=1", cfg["domain"])
    expected = f"https://{cfg['domain']}:{cfg['https_port']}/some/path?x=1"
    report.check(
        "http redirects to https",
        status == 301 and headers.get("Location") == expected,
        f"{status} {headers.get('Location')}",
    )

    out = subprocess.run(
        [cfg["cli"], "--config", cfg["config_file"], "token", "--callsign", "W1AW", "--room", "*"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    token = out.stdout.splitlines()[0] if out.returncode == 0 and out.stdout else None
    report.check("yahaml-voice token on the host", bool(token), out.stderr.strip()[-200:])
    if not token:
        return None

    status, _, _ = https_get(cfg, "/api/ice-servers")
    report.check("/api/ice-servers without a token is refused", status == 401, str(status))

    access_log = Path("/var/log/nginx/access.log")  # proxy_access_log
    # Earlier runs (and other deploys of this machine) wrote to it too: only what follows.
    start = len(await asyncio.to_thread(_read, access_log))
    try:
        async with websockets.connect(
            f"wss://{cfg['domain']}:{cfg['https_port']}/ws?token={token}",
            ssl=cfg["proxy_ssl"],
            host="127.0.0.1",
            port=cfg["https_port"],
            server_hostname=cfg["domain"],
            origin=f"https://{cfg['domain']}:{cfg['https_port']}",  # type: ignore[arg-type]
            open_timeout=10,
        ) as ws:
            first = await asyncio.wait_for(ws.recv(), 10)
            report.check("WebSocket /ws through nginx", True, str(first)[:80])
    except Exception as exc:  # the check reports whatever went wrong
        report.check("WebSocket /ws through nginx", False, repr(exc))
    await check_access_log(access_log, start, token, report)
    return token


async def check_access_log(log: Path, start: int, token: str, report: Report) -> None:
    """nginx logged the /ws?token=... above as `GET /ws` (it writes a WebSocket's line when
    the socket ends), and the token nowhere."""
    text = ""
    for _ in range(50):
        text = (await asyncio.to_thread(_read, log))[start:]
        if '"GET /ws HTTP/1.1" 101' in text:
            break
        await asyncio.sleep(0.1)
    report.check(
        "nginx logs /ws without its query string (no token)",
        '"GET /ws HTTP/1.1" 101' in text and token not in text and "/ws?token=" not in text,
        text.splitlines()[-1][:160] if text else "no access log",
    )


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def check_metrics(cfg: dict[str, Any], report: Report) -> None:
    """The server reads the TURN certificate it hands out turns: URLs for (metrics.certificates
    defaults to them) and exports its expiry; Redis is up."""
    target = f"127.0.0.1:{cfg['turn_tls_port']}"
    text, seconds = "", None
    # coturn starts after the server: the server tries an unreadable target every minute.
    deadline = time.monotonic() + 70
    while time.monotonic() < deadline:
        try:
            with contextlib.closing(http.client.HTTPConnection("127.0.0.1", 9464, timeout=5)) as c:
                c.request("GET", "/metrics")
                text = c.getresponse().read().decode()
        except OSError as exc:
            text = repr(exc)
        found = re.search(
            rf'^yahaml_voice_tls_cert_expiry_seconds{{target="turns:{re.escape(target)}[^"]*"}} (\S+)$',
            text,
            re.M,
        )
        if found:
            seconds = float(found.group(1))
            break
        time.sleep(1)
    # run.sh made the TURN certificate for two days.
    report.check(
        "TURN certificate expiry in /metrics",
        seconds is not None and 0 < seconds <= 2 * 86400,
        f"{seconds} s" if seconds is not None else text[-300:],
    )
    report.check("Redis up in /metrics", "\nyahaml_voice_store_up 1.0" in text)


def check_logrotate(report: Report) -> None:
    """Direct mode: the roles' logrotate entries parse, and cron (which runs logrotate) runs."""
    for name in ("yahaml-voice", "yahaml-voice-coturn"):
        entry = Path("/etc/logrotate.d") / name
        out = subprocess.run(
            ["logrotate", "-d", "-s", os.devnull, str(entry)], capture_output=True, text=True
        )
        ok = entry.exists() and out.returncode == 0 and "error" not in out.stderr.lower()
        report.check(f"logrotate entry {name}", ok, out.stderr.strip()[-200:])
    cron = subprocess.run(
        ["/usr/local/sbin/yv-direct", "status", "cron"], capture_output=True, text=True
    )
    report.check("cron runs (logrotate's daily job)", cron.returncode == 0, cron.stdout.strip())


def check_client(cfg: dict[str, Any], report: Report) -> None:
    """The browser client comes with the installed package, not from a copy the role made."""
    src = Path(cfg["work"]) / "src" / "client"
    for path, kind in (("/", "text/html"), ("/app.js", "text/javascript")):
        name = "index.html" if path == "/" else path.lstrip("/")
        status, headers, body = https_get(cfg, path)
        report.check(
            f"{path} through nginx serves the client's {name}",
            status == 200
            and headers.get("Content-Type", "").startswith(kind)
            and body == (src / name).read_bytes(),
            f"{status} {headers.get('Content-Type')} {len(body)} bytes",
        )

    rendered = yaml.safe_load(Path(cfg["config_file"]).read_text())
    report.check(
        "the rendered configuration sets no server.client_dir",
        "client_dir" not in (rendered.get("server") or {}),
        str((rendered.get("server") or {}).get("client_dir")),
    )
    venv_python = Path(cfg["cli"]).parent / "python"
    out = subprocess.run(
        [
            str(venv_python),
            "-c",
            "import sys; from yahaml_voice.core.config import load_config; from yahaml_voice.server.static import"
            " client_dir; print(client_dir(load_config(sys.argv[1], environ={})))",
            cfg["config_file"],
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
    )
    served = Path(out.stdout.strip()) if out.returncode == 0 else None
    report.check(
        "the server serves the client installed in its venv's site-packages",
        served is not None
        and "site-packages" in served.parts
        and served.is_relative_to(venv_python.parent.parent)
        and (served / "index.html").is_file(),
        out.stdout.strip() or out.stderr.strip()[-200:],
    )
    stale = Path(cfg["cli"]).parent.parent.parent / "client"
    report.check("no client copy next to the venv", not stale.exists(), str(stale))


async def check_turn(cfg: dict[str, Any], token: str, report: Report) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    status, _, _ = https_get(cfg, "/api/ice-servers", auth)
    report.check("/api/ice-servers refused before joining a room", status == 403, str(status))
    joined, _, _ = https_get(
        cfg,
        "/api/voice-rooms/shack/join",
        {**auth, "Content-Type": "application/json"},
        method="POST",
        body=b"{}",
    )
    report.check("joined room shack", joined == 200, str(joined))
    status, _, body = https_get(cfg, "/api/ice-servers", auth)
    https_get(cfg, "/api/voice-rooms/shack/leave", auth, method="POST")
    report.check("/api/ice-servers with a seat", status == 200, str(status))
    answer = json.loads(body)
    turn = ice_turn(answer)
    urls = turn["urls"]
    udp = url_port(urls, "turn", "udp")
    tcp = url_port(urls, "turn", "tcp")
    tls = url_port(urls, "turns", "tcp")
    report.check("TURN URLs for UDP, TCP and TLS", bool(udp and tcp and tls), " ".join(urls))
    if not (udp and tcp and tls):
        return
    user, password = turn["username"], turn["credential"]

    stun_urls = [u for srv in answer["iceServers"] for u in srv["urls"] if u.startswith("stun:")]
    report.check("a STUN URL (the deployment's own coturn)", bool(stun_urls), " ".join(stun_urls))
    if stun_urls:
        host, port = stun_urls[0][len("stun:") :].rsplit(":", 1)
        mapped = await stun_binding((host, int(port)))
        report.check("STUN binding answered with our address", mapped is not None, str(mapped))

    async with allocation(udp, user, password) as proto:
        problem = await relay_roundtrip(proto)
        report.check(
            "TURN/UDP allocation with the API's credentials relays traffic",
            not problem,
            problem or f"relayed via {proto.relayed_address}",
        )
        for peer in PRIVATE_PEERS:
            code = await permission(proto, peer)
            report.check(f"deployed relay refuses private peer {peer}", code == 403, str(code))
    async with allocation(tcp, user, password, transport="tcp") as proto:
        problem = await relay_roundtrip(proto)
        report.check("TURN/TCP allocation relays traffic", not problem, problem)
    # The certificate the test provided (coturn_tls_cert_src), issued for 127.0.0.1.
    tls_ctx = ssl.create_default_context(cafile=cfg["turn_cert"])
    async with allocation(tls, user, password, transport="tcp", tls=tls_ctx) as proto:
        problem = await relay_roundtrip(proto)
        report.check(
            "TURN/TLS allocation (turns:, provided certificate verified) relays traffic",
            not problem,
            problem,
        )
    # alt_tls_443: nginx's TLS front shares the HTTPS port with the site (no redirect).
    front = (tls[0], cfg["https_port"])
    report.check(
        "a turns: URL on the HTTPS port (the TLS front)",
        f"turns:{front[0]}:{front[1]}?transport=tcp" in urls,
        " ".join(urls),
    )
    async with allocation(front, user, password, transport="tcp", tls=tls_ctx) as proto:
        problem = await relay_roundtrip(proto)
        report.check(
            "TURN/TLS through nginx's TLS front on the HTTPS port relays traffic",
            not problem,
            problem,
        )

    code = await allocate_error(udp, user, password + "x")
    report.check("a wrong TURN password gets 401", code == 401, str(code))


async def check_production_turn(cfg: dict[str, Any], report: Report) -> None:
    """coturn from the production rules: loopback and private peers get 403."""
    conf = cfg["prod_turn_conf"]
    report.check(
        "production rules: no loopback peers, ::ffff: mapped addresses denied",
        "allow-loopback-peers" not in cfg["prod_turn_text"]
        and "denied-peer-ip=::ffff:0.0.0.0-::ffff:255.255.255.255" in cfg["prod_turn_text"],
    )
    workdir = Path(tempfile.mkdtemp(prefix="prod-turn-", dir=cfg["work"]))
    os.chown(workdir, _uid("turnserver"), -1)
    proc = subprocess.Popen(
        [
            "turnserver",
            "-c",
            conf,
            "--pidfile",
            str(workdir / "pid"),
            "--userdb",
            str(workdir / "turndb"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        user="turnserver",
        group="turnserver",
    )
    try:
        server = ("127.0.0.1", cfg["prod_turn_port"])
        user, password = turn_credentials(cfg["turn_secret"], "prod-check", 600)
        code = 0
        for _ in range(50):  # coturn binds its port in tens of milliseconds
            with contextlib.suppress(OSError, stun.TransactionError, TimeoutError):
                code = await allocate_error(server, user, password)
                if code == 200:
                    break
            await asyncio.sleep(0.1)
        report.check(
            "production coturn allocates with server-minted credentials", code == 200, str(code)
        )
        if code != 200:
            return
        async with allocation(server, user, password) as proto:
            for peer in LOOPBACK_PEERS + PRIVATE_PEERS:
                code = await permission(proto, peer)
                report.check(f"production relay refuses {peer}", code == 403, str(code))
    finally:
        stop_process(proc, 10)


def _uid(name: str) -> int:
    import pwd

    return pwd.getpwnam(name).pw_uid


def check_redis(cfg: dict[str, Any], report: Report) -> None:
    client = redis.Redis(host="127.0.0.1", port=cfg["redis_port"], socket_timeout=5)
    try:
        client.ping()
        report.check("Redis refuses unauthenticated clients", False, "PING answered")
    except redis.exceptions.AuthenticationError as exc:
        report.check("Redis refuses unauthenticated clients", True, str(exc))
    finally:
        client.close()
    client = redis.Redis(
        host="127.0.0.1", port=cfg["redis_port"], password=cfg["redis_password"], socket_timeout=5
    )
    try:
        report.check("Redis answers with the password", client.ping() is True)
        try:
            client.config_get("maxmemory")
            report.check("Redis ACL denies administration (CONFIG)", False, "CONFIG answered")
        except redis.exceptions.NoPermissionError as exc:
            report.check("Redis ACL denies administration (CONFIG)", True, str(exc)[:60])
    finally:
        client.close()


def check_listeners(cfg: dict[str, Any], report: Report) -> None:
    """Every socket the deployed services listen on is a loopback address."""
    pids: set[int] = set()
    for pidfile in Path("/run/yv-direct").glob("*.pid"):
        with contextlib.suppress(ValueError, OSError):
            pids.add(int(pidfile.read_text().strip()))
    # nginx workers and the like are children of the started processes.
    children: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children[int(stat.parent.name)] = int(fields[1])
    grew = True
    while grew:
        extra = {pid for pid, ppid in children.items() if ppid in pids and pid not in pids}
        pids |= extra
        grew = bool(extra)
    out = subprocess.run(["ss", "-Hlnptu"], capture_output=True, text=True, check=True).stdout
    seen, public = [], []
    for line in out.splitlines():
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if not owners & pids:
            continue
        local = line.split()[4]
        seen.append(local)
        host = local.rsplit(":", 1)[0].strip("[]")
        host = host.split("%")[0]
        if not (host.startswith("127.") or host == "::1" or host.startswith("::ffff:127.")):
            public.append(line)
    report.check(
        f"all {len(seen)} listening sockets of the deployed services are on loopback",
        bool(seen) and not public,
        "; ".join(public) or " ".join(sorted(set(seen))),
    )
    report.check(
        "deployed processes found", len(pids) >= 4 + cfg["sfu_workers"], f"{len(pids)} pids"
    )


def check_firewall(cfg: dict[str, Any], report: Report) -> None:
    for label, path in (("test", cfg["nft_test"]), ("production", cfg["nft_prod"])):
        out = subprocess.run(["nft", "-c", "-f", path], capture_output=True, text=True, check=False)
        report.check(f"nft -c parses the {label} ruleset", out.returncode == 0, out.stderr.strip())
    text = Path(cfg["nft_prod"]).read_text()
    opened = re.findall(r"^\s*(.*dport.*)$", text, re.M)
    wanted = [
        "tcp dport 22 accept",
        "tcp dport { 80, 443 } accept",
        "udp dport 3478 accept",
        "tcp dport 3478 accept",
        "tcp dport 5349 accept",
        "udp dport 49160-49999 accept",
    ]
    report.check(
        "production ruleset: input policy drop; opens only SSH, web, TURN and the relay range",
        opened == wanted and "type filter hook input priority filter; policy drop;" in text,
        " | ".join(opened),
    )


def check_secrets(cfg: dict[str, Any], report: Report) -> None:
    logs = "".join(Path(p).read_text(errors="replace") for p in cfg["logs"])
    leaked = [n for n, v in cfg["secrets"].items() if v and v in logs]
    report.check("no secret appears in the Ansible output", not leaked, ", ".join(leaked))
    modes = {
        cfg["config_file"]: ("root", "yahaml-voice", 0o640),
        "/etc/turnserver.conf": ("root", "turnserver", 0o640),
        "/etc/redis/redis.conf": ("redis", "redis", 0o640),
    }
    import grp
    import pwd

    wrong = []
    for path, (owner, group, mode) in modes.items():
        st = os.stat(path)
        have = (
            pwd.getpwuid(st.st_uid).pw_name,
            grp.getgrgid(st.st_gid).gr_name,
            st.st_mode & 0o777,
        )
        if have != (owner, group, mode):
            wrong.append(f"{path} {have[0]}:{have[1]} {oct(have[2])}")
    report.check("files with secrets are 0640 and owned right", not wrong, "; ".join(wrong))
    redis_conf = Path("/etc/redis/redis.conf").read_text()
    report.check(
        "redis.conf holds the password's SHA-256, not the password",
        cfg["redis_password"] not in redis_conf and "user default on #" in redis_conf,
    )


def check_units(cfg: dict[str, Any], report: Report) -> None:
    """The systemd units are valid, and their ExecStart is what actually runs here.

    No systemd as PID 1 here: yv-direct started the same command lines, so the running
    processes' argv must equal the units' ExecStart (%i = the worker number).
    """
    unit_dir = Path("/etc/systemd/system")
    server_unit = unit_dir / "yahaml-voice.service"
    sfu_unit = unit_dir / "yahaml-voice-sfu@.service"
    scratch = Path(tempfile.mkdtemp(prefix="units-", dir=cfg["work"]))
    (scratch / "yahaml-voice.service").write_text(server_unit.read_text())
    (scratch / "yahaml-voice-sfu@1.service").write_text(sfu_unit.read_text())
    if shutil.which("systemd-analyze"):
        for unit in sorted(scratch.iterdir()):
            out = subprocess.run(
                ["systemd-analyze", "verify", "--man=no", str(unit)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            problems = [
                line
                for line in (out.stdout + out.stderr).splitlines()
                if str(unit) in line or "rror" in line
            ]
            report.check(
                f"systemd-analyze verify {unit.name}",
                out.returncode == 0 and not problems,
                "; ".join(problems),
            )
            out = subprocess.run(
                ["systemd-analyze", "security", "--offline=true", str(unit)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            level = re.search(r"Overall exposure level for \S+: ([\d.]+ \S+)", out.stdout)
            print(f"info {unit.name} systemd exposure level: {level.group(1) if level else '?'}")
    else:
        print("info systemd-analyze not installed: units not verified")

    def exec_start(unit: Path, instance: str = "") -> list[str]:
        line = next(x for x in unit.read_text().splitlines() if x.startswith("ExecStart="))
        return [a.replace("%i", instance) for a in shlex.split(line.split("=", 1)[1])]

    def argv(name: str) -> list[str]:
        pid = Path(f"/run/yv-direct/{name}.pid").read_text().strip()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        args = [a.decode() for a in raw]
        # A console script runs as `python <script> args...`.
        return args[1:] if args and "python" in Path(args[0]).name else args

    wanted = {"yahaml-voice": exec_start(server_unit)}
    for i in range(1, cfg["sfu_workers"] + 1):
        wanted[f"yahaml-voice-sfu@{i}"] = exec_start(sfu_unit, str(i))
    for name, command in wanted.items():
        try:
            running = argv(name)
        except (OSError, StopIteration) as exc:
            running = [repr(exc)]
        report.check(f"{name} runs its unit's ExecStart", running == command, " ".join(running))


async def network_checks(cfg: dict[str, Any], report: Report) -> None:
    token = await check_web(cfg, report)
    check_client(cfg, report)
    if token:
        await check_turn(cfg, token, report)
    await check_production_turn(cfg, report)


# ------------------------------------------------------------------ upgrade with a client


class _Ear:
    """When `client` last heard a loud frame, sampled every 10 ms; the longest silence
    between two heard frames in a window is the audio gap."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.heard: list[float] = []
        self._task = asyncio.create_task(self._run())

    def _latest(self) -> float:
        times = [
            stats.last_loud_at
            for peer in list(self.client.peers.values())
            for stats in peer.audio
            if stats.last_loud_at is not None
        ]
        return max(times, default=0.0)

    async def _run(self) -> None:
        while True:
            latest = self._latest()
            if latest and (not self.heard or latest > self.heard[-1]):
                self.heard.append(latest)
            await asyncio.sleep(0.01)

    def silences(self, since: float, longer: float = 0.25) -> list[tuple[float, float]]:
        """(start, length) of every silence after `since` longer than `longer` s."""
        times = [t for t in self.heard if t >= since]
        return [(a, b - a) for a, b in itertools.pairwise(times) if b - a > longer]

    def gap(self, since: float) -> tuple[float, float]:
        """(longest silence after `since` in s, when it began)."""
        before = [t for t in self.heard if t < since][-1:]
        times = before + [t for t in self.heard if t >= since]
        gaps = [(b - a, a) for a, b in itertools.pairwise(times)]
        return max(gaps, default=(0.0, since))

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def _stay(client: Any, log: list[str]) -> None:
    """Reconnect (and rejoin: the seat is kept for server.grace_period) whenever the
    server closes the socket, as the browser client does."""
    seen = 0
    while True:
        await client.wait_event("_closed", since=seen, timeout=3600)
        seen = len(client.events)
        closed_at = time.monotonic()
        while True:
            try:
                answer = await client.reconnect(timeout=5)
                log.append(
                    f"{client.callsign} rejoined after {time.monotonic() - closed_at:.2f}s "
                    f"as {answer.get('participant', {}).get('id')}"
                )
                if answer.get("participant", {}).get("id") != client.participant_id:
                    log.append(f"{client.callsign} got another seat")
                break
            except Exception as exc:  # the server is still down: retry
                if time.monotonic() - closed_at > 60:
                    log.append(f"{client.callsign} could not rejoin: {exc!r}")
                    return
                await asyncio.sleep(0.2)
        seen = len(client.events)


def _wait_for(path: Path) -> None:
    while not path.exists():
        time.sleep(0.2)


async def upgrade_watch(cfg: dict[str, Any]) -> int:
    """Two clients in an SFU room (cfg["room"]) while run.sh switches the host's release
    (cfg["phase"]: `upgrade` or `rollback`): Alice talks, Bob listens. Writes
    `<work>/<phase>.ready` once Bob hears Alice, waits for `<work>/<phase>.done` (the
    converge finished), then checks that both kept their seats (same participant, no
    participantLeft), that Bob hears Alice again, and writes the audio gap (ms from the
    last frame heard before the restart to the first after) to `<work>/<phase>-result.json`."""
    from tests.voiceclient import SFU, VoiceClient

    report = Report()
    work = Path(cfg["work"])
    phase = cfg.get("phase", "upgrade")
    base = f"http://127.0.0.1:{cfg['server_port']}"
    clients = []
    for callsign, publish in (("W1UPG", True), ("K1UPG", False)):
        out = subprocess.run(
            [
                *(cfg["cli"], "--config", cfg["config_file"], "token"),
                *("--callsign", callsign, "--room", cfg["room"]),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        client = VoiceClient(base, publish=publish, tone=440.0)
        client.use_token(out.stdout.splitlines()[0])
        clients.append(client)
    bob = clients[1]  # Alice (clients[0]) talks
    log: list[str] = []
    stays: list[asyncio.Task[None]] = []
    ear: _Ear | None = None
    try:
        for client in clients:
            await client.connect()
            await client.join(cfg["room"])
        await bob.wait_audio(frames=25, timeout=30)
        report.check(
            f"{phase}: Bob hears Alice through an SFU worker before the switch",
            bob.mode == "sfu" and SFU in bob.peers,
            f"mode={bob.mode}",
        )
        ids = {c.callsign: c.participant_id for c in clients}
        ear = _Ear(bob)
        stays = [asyncio.create_task(_stay(c, log)) for c in clients]
        (work / f"{phase}.ready").write_text("ready\n")
        started = time.monotonic()
        await asyncio.to_thread(_wait_for, work / f"{phase}.done")
        restarted = any(e["type"] == "_closed" for c in clients for e in c.events)
        report.check(f"{phase}: the server restarted under the clients", restarted)
        try:
            await bob.wait_audio(frames=25, timeout=30)
            back = True
        except TimeoutError:
            back = False
        report.check(f"{phase}: Bob hears Alice again after the switch", back)
        left = [
            e["data"].get("participantId")
            for c in clients
            for e in c.events
            if e["type"] == "participantLeft"
        ]
        report.check(f"{phase}: nobody was told that a participant left", not left, str(left))
        report.check(
            f"{phase}: both kept their seats (the same participant ids)",
            {c.callsign: c.participant_id for c in clients} == ids
            and not any("another seat" in line or "could not" in line for line in log),
            "; ".join(log),
        )
        gap, began = ear.gap(started)
        timeline = [
            (at - started, f"{c.callsign} {e['type']} {e.get('data', {}).get('epoch', '')}".strip())
            for c in clients
            for e, at in zip(c.events, c.event_times, strict=False)
            if at >= started and e["type"] in ("_closed", "connected", "roomModeChanged")
        ] + [(at - started, f"silence {length:.2f}s") for at, length in ear.silences(started)]
        print(f"info {phase}: {'; '.join(log)}")
        print(
            f"info {phase} timeline (s into the converge): "
            + ", ".join(f"{at:.2f} {what}" for at, what in sorted(timeline))
        )
        report.check(
            f"{phase}: audio gap measured",
            back and gap > 0,
            f"{gap * 1000:.0f} ms (silence began {began - started:.1f}s into the converge)",
        )
        (work / f"{phase}-result.json").write_text(
            json.dumps({f"{phase}_audio_gap_ms": round(gap * 1000), "ok": report.ok})
        )
    finally:
        for task in stays:
            task.cancel()
        if ear is not None:
            await ear.stop()
        for client in clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 10)
    return 0 if report.ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", help="JSON written by run.sh (ports, paths)")
    parser.add_argument(
        "--upgrade-watch",
        action="store_true",
        help="join two clients, then watch them through an upgrade (see upgrade_watch)",
    )
    args = parser.parse_args()
    if args.upgrade_watch:
        return asyncio.run(upgrade_watch(json.loads(Path(args.config).read_text())))
    cfg = json.loads(Path(args.config).read_text())
    secrets = Path(cfg["secrets_dir"])
    cfg["turn_secret"] = (secrets / "turn_secret").read_text().strip()
    cfg["redis_password"] = (secrets / "redis_password").read_text().strip()
    cfg["secrets"] = {
        "token secret": (secrets / "token_secret").read_text().strip(),
        "SFU secret": (secrets / "sfu_secret").read_text().strip(),
        "TURN secret": cfg["turn_secret"],
        "Redis password": cfg["redis_password"],
    }
    cfg["prod_turn_text"] = Path(cfg["prod_turn_conf"]).read_text()
    cfg["proxy_ssl"] = ssl.create_default_context(cafile=cfg["proxy_cert"])
    report = Report()
    asyncio.run(network_checks(cfg, report))
    check_redis(cfg, report)
    check_listeners(cfg, report)
    check_firewall(cfg, report)
    check_secrets(cfg, report)
    check_units(cfg, report)
    check_metrics(cfg, report)
    check_logrotate(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
