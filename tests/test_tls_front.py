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
from dataclasses import dataclass
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
  const stats = [...(await a.getStats()).values()];
  const pair = stats.find((s) => s.type === "candidate-pair" && s.nominated && s.state === "succeeded");
  const local = stats.find((s) => s.id === pair.localCandidateId);
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


def _render(work: Path, turn_tls_port: int, front_port: int, web_port: int) -> dict[str, Path]:
    """The proxy role's site and front, rendered by its own tasks with the test's ports."""
    cert, key = _cert(work, WEB_NAME, f"DNS:{WEB_NAME}")
    files = {"site": work / "site.conf", "front": work / "front.conf", "log": work / "front.log"}
    variables = {
        "ansible_python_interpreter": sys.executable,
        "vault_yahaml_voice_turn_secret": "rendered-but-unused-here",
        "yahaml_voice_domain": WEB_NAME,
        "yahaml_voice_turn_domain": TURN_NAME,
        "yahaml_voice_turn_overrides": {
            "alt_tls_443": True, "listen_ip": "127.0.0.1", "tls_listening_port": turn_tls_port,
        },
        "proxy_listen_addresses": ["127.0.0.1"],
        "proxy_https_port": front_port,
        "proxy_http_port": free_port(),
        "proxy_upstream": f"127.0.0.1:{web_port}",
        "proxy_cert": str(cert),
        "proxy_key": str(key),
        "proxy_tls_front_web_address": f"127.0.0.1:{free_port()}",
        "proxy_tls_front_turn_hop_address": f"127.0.0.1:{free_port()}",
        "proxy_site_file": str(files["site"]),
        "proxy_tls_front_config_file": str(files["front"]),
        "proxy_tls_front_log": str(files["log"]),
        "proxy_acme_webroot": str(work / "acme"),
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
    return files


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


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    work = tmp_path_factory.mktemp("tls-front")
    turn_cert, turn_key = _cert(work, TURN_NAME, f"DNS:{TURN_NAME},IP:127.0.0.1")
    web = ThreadingHTTPServer(("127.0.0.1", 0), _Web)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    config = turn_config(cert=str(turn_cert), pkey=str(turn_key), allow_loopback_peers=True)
    front_port = free_port()
    files = _render(work, config.ice.turn.tls_listening_port, front_port, web.server_address[1])
    conf = _nginx_conf(work, files)
    test = subprocess.run([NGINX, "-t", "-c", str(conf), "-e", str(work / "error.log")],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert test.returncode == 0, test.stderr
    nginx = subprocess.Popen(
        [NGINX, "-c", str(conf), "-e", str(work / "error.log"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_listening(front_port, nginx, work / "error.log")
        with running_turnserver(config) as turn:
            yield Front(front_port, turn, files["log"], work / f"{WEB_NAME}.crt", turn_cert)
    finally:
        stop_process(nginx, 5)
        web.shutdown()
        web.server_close()


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
    # Verified against coturn's own certificate: a handshake with nginx's site would fail.
    # The name is checked only where it is coturn's (the web's name with ALPN stun.turn, or
    # none, reaches coturn too).
    context.check_hostname = server_name == TURN_NAME
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


async def test_aioice_turns_url_through_the_front(front: Front, monkeypatch: Any) -> None:
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
