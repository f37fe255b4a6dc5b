"""TURN over TLS and the web on one port: the proxy role's nginx TLS front, for real.

The proxy role's own render tasks (tests/deploy/render-tls-front.yml) render the site and
the stream front into a work directory; a real nginx runs them on loopback next to a real
coturn (rendered from the production template) and a small web backend. Through the
front's one port: HTTPS clients get the web backend, TURN clients (by server name, by
ALPN "stun.turn", or with neither, as aiortc with a `turns:<address>` URL) get a relay,
and Chromium connects with only `turns:<front>` and iceTransportPolicy "relay".
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aioice.turn import TurnClientTcpProtocol, TurnTransport, create_turn_endpoint

from tests.fixtures.turn import (
    TurnServer,
    free_port,
    running_turnserver,
    turn_config,
    turnserver_available,
)
from yahaml_voice.core.processes import stop_process
from yahaml_voice.core.tokens import turn_credentials

ROOT = Path(__file__).resolve().parents[1]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
PLAYBOOK = ROOT / "tests" / "deploy" / "render-tls-front.yml"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
WEB_NAME = "voice.test"
TURN_NAME = "turn.voice.test"

pytestmark = [
    pytest.mark.turn,
    pytest.mark.skipif(
        not Path(NGINX).exists(), reason="nginx not installed (apt-get install nginx)"
    ),
    pytest.mark.skipif(
        not STREAM_MODULE.exists(), reason="nginx stream module missing (libnginx-mod-stream)"
    ),
    pytest.mark.skipif(not turnserver_available(), reason="coturn not installed"),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed"),
    pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-core not installed"),
]

PAGE = """<!doctype html><title>turns through the front</title><script>
async function relayedCall(iceServers) {
  const config = {iceServers, iceTransportPolicy: "relay"};
  const a = new RTCPeerConnection(config), b = new RTCPeerConnection(config);
  a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
  b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
  const got = new Promise((resolve) => {
    b.ondatachannel = (e) => { e.channel.onmessage = (m) => resolve(m.data); };
  });
  const channel = a.createDataChannel("front");
  channel.onopen = () => channel.send("73 via 443");
  await a.setLocalDescription(await a.createOffer());
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(await b.createAnswer());
  await a.setRemoteDescription(b.localDescription);
  const message = await got;
  // The selected pair can show in the stats a moment after the first message arrives.
  let local = null;
  for (let i = 0; i < 50 && !local; i++) {
    const report = await a.getStats();
    let pairId = null;
    report.forEach((s) => { if (s.type === "transport" && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId; });
    const pair = pairId ? report.get(pairId) : null;
    local = pair ? report.get(pair.localCandidateId) : null;
    if (!local) await new Promise((r) => setTimeout(r, 100));
  }
  if (!local) throw new Error("no selected candidate pair after 5 s");
  a.close(); b.close();
  return {message, type: local.candidateType, relayProtocol: local.relayProtocol};
}
</script>"""


class _Web(BaseHTTPRequestHandler):
    """The web backend behind nginx's site: the test page and who nginx says is calling."""

    def do_GET(self) -> None:
        if self.path == "/page":
            body, kind = PAGE.encode(), "text/html"
        else:
            seen = {"path": self.path, "x-real-ip": self.headers.get("X-Real-IP")}
            body, kind = json.dumps({"backend": "web", **seen}).encode(), "application/json"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _cert(directory: Path, name: str, sans: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", f"/CN={name}", "-addext", f"subjectAltName={sans}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@dataclass
class Front:
    """nginx's TLS front on `port` with coturn and the web backend behind it."""

    port: int
    turn: TurnServer
    log: Path
    web_cert: Path
    turn_cert: Path

    def credentials(self, user: str) -> tuple[str, str]:
        return turn_credentials(self.turn.secret, user, 600)

    def routes(self) -> list[str]:
        """The front's access log: one line per connection (client, upstream, SNI, ALPN)."""
        return self.log.read_text().splitlines() if self.log.exists() else []

    def wait_route(self, needle: str) -> list[str]:
        """The log once a line holds `needle` (nginx writes it when the connection ends)."""
        deadline = time.monotonic() + 5
        while not any(needle in line for line in self.routes()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.routes()


@dataclass
class Layout:
    """One rendering of the front: TURN's name and the front's own ports and files."""

    turn_name: str
    dir: Path
    port: int = field(default_factory=free_port)

    @property
    def files(self) -> dict[str, Path]:
        return {name: self.dir / f"{name}.conf" for name in ("site", "front")}

    @property
    def log(self) -> Path:
        return self.dir / "front.log"


def _render(work: Path, layouts: list[Layout], turn_tls_port: int, web_port: int) -> None:
    """The proxy role's site and front, rendered by its own tasks (one Ansible run)."""
    variables = {
        "ansible_python_interpreter": sys.executable,
        "vault_yahaml_voice_turn_secret": "rendered-but-unused-here",
        "yahaml_voice_domain": WEB_NAME,
        "yahaml_voice_turn_overrides": {
            "alt_tls_443": True, "listen_ip": "127.0.0.1", "tls_listening_port": turn_tls_port,
        },
        "proxy_listen_addresses": ["127.0.0.1"],
        "proxy_upstream": f"127.0.0.1:{web_port}",
        "proxy_cert": str(work / f"{WEB_NAME}.crt"),
        "proxy_key": str(work / f"{WEB_NAME}.key"),
        "proxy_acme_webroot": str(work / "acme"),
        "tls_front_layouts": [
            {
                "turn_domain": layout.turn_name, "dir": str(layout.dir), "https_port": layout.port,
                "http_port": free_port(), "web_address": f"127.0.0.1:{free_port()}",
                "hop_address": f"127.0.0.1:{free_port()}",
            }
            for layout in layouts
        ],
    }  # fmt: skip
    (work / "vars.json").write_text(json.dumps(variables))
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "deploy" / "ansible.cfg"),
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_NOCOLOR": "1",
    }
    done = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", str(PLAYBOOK), "-e", f"@{work / 'vars.json'}"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def _nginx_conf(work: Path, files: dict[str, Path]) -> Path:
    """Debian's nginx.conf in miniature: the module, the site in http{}, the front at top level."""
    temp = work / "temp"
    temp.mkdir()
    conf = work / "nginx.conf"
    conf.write_text(
        f"load_module {STREAM_MODULE};\n"
        f"pid {work}/nginx.pid;\n"
        f"error_log {work}/error.log info;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"    access_log {work}/access.log;\n"
        + "".join(f"    {kind}_temp_path {temp}/{kind};\n"
                  for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        + f"    include {files['site']};\n"
        "}\n"
        f"include {files['front']};\n"
    )  # fmt: skip
    return conf


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nginx did not listen: {log.read_text(errors='replace')[-2000:]}")


@dataclass
class Backends:
    """What sits behind a front: coturn (TLS on its own port) and the web backend."""

    work: Path
    turn: TurnServer
    web_cert: Path
    turn_cert: Path
    layouts: dict[str, Layout]


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backends]:
    work = tmp_path_factory.mktemp("tls-front")
    names = f"DNS:{TURN_NAME},DNS:{WEB_NAME},IP:127.0.0.1"
    turn_cert, turn_key = _cert(work, TURN_NAME, names)
    web_cert, _ = _cert(work, WEB_NAME, f"DNS:{WEB_NAME}")
    web = ThreadingHTTPServer(("127.0.0.1", 0), _Web)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    config = turn_config(cert=str(turn_cert), pkey=str(turn_key), allow_loopback_peers=True)
    layouts = {name: Layout(name, work / name) for name in (TURN_NAME, WEB_NAME)}
    for layout in layouts.values():
        layout.dir.mkdir()
    try:
        _render(
            work, list(layouts.values()), config.ice.turn.tls_listening_port, web.server_address[1]
        )
        with running_turnserver(config) as turn:
            yield Backends(work, turn, web_cert, turn_cert, layouts)
    finally:
        web.shutdown()
        web.server_close()


@contextmanager
def _running_front(backends: Backends, turn_name: str) -> Iterator[Front]:
    """nginx on the role-rendered site and front whose TURN name is `turn_name`."""
    layout = backends.layouts[turn_name]
    work, front_port = layout.dir, layout.port
    conf = _nginx_conf(work, layout.files)
    error_log = str(work / "error.log")
    test = subprocess.run([NGINX, "-t", "-c", str(conf), "-e", error_log],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert test.returncode == 0, test.stderr
    nginx = subprocess.Popen(
        [NGINX, "-c", str(conf), "-e", error_log, "-g", "daemon off;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_listening(front_port, nginx, work / "error.log")
        yield Front(front_port, backends.turn, layout.log, backends.web_cert, backends.turn_cert)
    finally:
        stop_process(nginx, 5)


@pytest.fixture(scope="module")
def front(backends: Backends) -> Iterator[Front]:
    """The recommended layout: TURN has its own name (a second DNS name, same address)."""
    with _running_front(backends, TURN_NAME) as running:
        yield running


@pytest.fixture(scope="module")
def shared_front(backends: Backends) -> Iterator[Front]:
    """The single-host default: TURN uses the web's name (yahaml_voice_turn_domain)."""
    with _running_front(backends, WEB_NAME) as running:
        yield running


def _context(cafile: Path, alpn: list[str] | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cafile))
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


def _https_get(front: Front, path: str, alpn: list[str] | None) -> dict[str, Any]:
    """GET through the front naming the web host (SNI), with these ALPN protocols."""
    context = _context(front.web_cert, alpn)
    with socket.create_connection(("127.0.0.1", front.port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=WEB_NAME) as tls:
            tls.sendall(
                f"GET {path} HTTP/1.1\r\nHost: {WEB_NAME}\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    result: dict[str, Any] = json.loads(body)
    return result


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue(maxsize=16)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))


class _Echo(asyncio.DatagramProtocol):
    """The peer: sends every datagram back."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(b"echo:" + data, addr)


async def _relay_roundtrip(
    front: Front, user: str, server_name: str | None, alpn: list[str] | None
) -> tuple[str, int]:
    """Allocate through the front over TLS, send to a UDP peer, get its echo back."""
    username, password = front.credentials(user)
    context = _context(front.turn_cert, alpn)
    # Verified against coturn's own certificate only: a handshake with nginx's site fails.
    context.check_hostname = server_name is not None
    loop = asyncio.get_running_loop()
    server = ("127.0.0.1", front.port)
    inner, protocol = await loop.create_connection(
        lambda: TurnClientTcpProtocol(server, username, password, 600, 300),
        host=server[0], port=server[1], ssl=context, server_hostname=server_name or "",
    )  # fmt: skip
    echo, _ = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", 0))
    try:
        relay = TurnTransport(protocol)
        inbox = _Inbox()
        await asyncio.wait_for(relay._connect(inbox), 10)
        peer = echo.get_extra_info("sockname")
        relay.sendto(b"73 de front", peer)
        assert await asyncio.wait_for(inbox.queue.get(), 5) == (b"echo:73 de front", peer)
        relayed: tuple[str, int] = relay.get_extra_info("sockname")
        return relayed
    finally:
        echo.close()
        inner.close()


def test_https_reaches_the_web_backend(front: Front) -> None:
    """Browsers' ALPN (h2, http/1.1) and a client without ALPN naming the web host: the site."""
    for alpn in (["http/1.1"], None):
        answer = _https_get(front, "/whoami", alpn)
        assert answer == {"backend": "web", "path": "/whoami", "x-real-ip": "127.0.0.1"}
    needle = f'sni="{WEB_NAME}" alpn="http/1.1"'
    routes = front.wait_route(needle)
    assert any(needle in line for line in routes), routes


@pytest.mark.parametrize(
    ("server_name", "alpn"),
    [(TURN_NAME, None), (WEB_NAME, ["stun.turn"]), (None, None)],
    ids=["sni-turn-name", "alpn-stun.turn", "address-no-sni"],
)
async def test_turn_over_tls_allocates_and_relays(
    front: Front, server_name: str | None, alpn: list[str] | None
) -> None:
    """By the TURN name, by RFC 7443's ALPN, or by address with neither: coturn relays."""
    relayed = await _relay_roundtrip(front, "p-front", server_name, alpn)
    assert relayed[0] == "127.0.0.1"


async def test_aioice_turns_url_through_the_front(
    front: Front, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aioice as aiortc drives it for `turns:127.0.0.1:<front>?transport=tcp`."""
    monkeypatch.setenv("SSL_CERT_FILE", str(front.turn_cert))
    username, password = front.credentials("p-aioice")
    relay, inbox = await create_turn_endpoint(
        _Inbox, ("127.0.0.1", front.port), username, password, ssl=True, transport="tcp"
    )
    loop = asyncio.get_running_loop()
    echo, _ = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", 0))
    try:
        peer = echo.get_extra_info("sockname")
        relay.sendto(b"cq", peer)
        assert await asyncio.wait_for(inbox.queue.get(), 5) == (b"echo:cq", peer)
    finally:
        echo.close()
        relay.close()


@pytest.fixture
def chromium() -> str:
    path = os.environ.get("YV_CHROMIUM", "/usr/bin/chromium")
    if not os.path.exists(path):
        pytest.skip(f"no Chromium at {path} (apt-get install chromium)")
    return path


@pytest.mark.browser
async def test_chromium_relays_through_turns_on_the_front(front: Front, chromium: str) -> None:
    """Only `turns:<TURN name>:<front>` and relay-only ICE: Chromium connects over TLS."""
    from playwright.async_api import async_playwright

    username, password = front.credentials("p-chromium")
    flags = [
        "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--ignore-certificate-errors",
        f"--host-resolver-rules=MAP {WEB_NAME} 127.0.0.1, MAP {TURN_NAME} 127.0.0.1",
    ]  # fmt: skip
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=flags)
        try:
            page = await browser.new_page()
            await page.goto(f"https://{WEB_NAME}:{front.port}/page")
            server = {
                "urls": f"turns:{TURN_NAME}:{front.port}?transport=tcp",
                "username": username,
                "credential": password,
            }
            result = await asyncio.wait_for(page.evaluate("(s) => relayedCall([s])", server), 20)
        finally:
            await browser.close()
    assert result == {"message": "73 via 443", "type": "relay", "relayProtocol": "tls"}
    routes = front.wait_route(f'sni="{TURN_NAME}"')
    assert any(f'sni="{TURN_NAME}"' in line for line in routes), routes
    print("\n".join(routes))


def test_shared_name_routes_by_alpn(shared_front: Front) -> None:
    """One name for web and TURN: browsers' HTTPS (ALPN) still reaches the site."""
    assert _https_get(shared_front, "/whoami", ["http/1.1"])["backend"] == "web"
    # Chromium's and Firefox's offer: nginx's site (its certificate) answers and picks h2.
    context = _context(shared_front.web_cert, ["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", shared_front.port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=WEB_NAME) as tls:
            assert tls.selected_alpn_protocol() == "h2"


async def test_shared_name_without_alpn_is_turn(shared_front: Front) -> None:
    """One name for web and TURN: a ClientHello without ALPN (Chromium's TURN client) relays."""
    relayed = await _relay_roundtrip(shared_front, "p-shared", WEB_NAME, None)
    assert relayed[0] == "127.0.0.1"
