"""The proxy role's nginx site never writes a token into its access log.

YAHAML-style clients open `/ws?token=<JWT>`, an `<audio src>` of a recording can only carry
`?token=`, and anything may be sent to plain HTTP before the redirect; whoever reads nginx's
access log (a log shipper, a backup) must not get working tokens from it. So no location
logs query strings, nor the referer's. The role's template is rendered with Ansible's
templar from the role's defaults (loopback ports moved in) and served by a real nginx in
front of a real server; the test reads the log nginx wrote.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.redis_fixture import write_tls_files
from tests.servers import ServerProcess, free_port
from yahaml_voice.core.processes import stop_process

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "deploy" / "roles" / "proxy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
pytestmark = pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx missing")


def render_site(overrides: dict[str, Any]) -> str:
    """The role's site template as the role renders it (group_vars, role defaults, then
    `overrides` like extra vars)."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    variables: dict[str, Any] = {"inventory_hostname": "localhost", "ansible_managed": "test"}
    for path in (ROOT / "deploy" / "group_vars" / "all" / "main.yml", ROLE / "defaults/main.yml"):
        variables.update(yaml.safe_load(path.read_text()) or {})
    variables.update(overrides)
    templar = Templar(loader=DataLoader(), variables=variables)
    source = (ROLE / "templates" / "yahaml-voice.conf.j2").read_text()
    return str(templar.template(source, preserve_trailing_newlines=True, escape_backslashes=False))


@pytest.fixture
def nginx(tmp_path: Path, server: ServerProcess) -> Iterator[tuple[str, Path, str]]:
    """nginx with the role's site on loopback in front of `server`: (https url, access log,
    plain http url)."""
    _, cert, key = write_tls_files(tmp_path)
    https = free_port()
    http = free_port()
    log = tmp_path / "access.log"
    site = render_site(
        {
            "proxy_listen_addresses": ["127.0.0.1"],
            "proxy_http_port": http,
            "proxy_https_port": https,
            "proxy_upstream": f"127.0.0.1:{server.port}",
            "proxy_cert": str(cert),
            "proxy_key": str(key),
            "proxy_access_log": str(log),
            "proxy_acme_webroot": str(tmp_path),
        }
    )
    (tmp_path / "site.conf").write_text(site)
    temp = "\n".join(
        f"  {kind}_temp_path {tmp_path}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"daemon off;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        "worker_processes 1;\nevents { worker_connections 64; }\n"
        f"http {{\n  access_log {log};\n{temp}\n  include {tmp_path}/site.conf;\n}}\n"
    )
    check = subprocess.run([NGINX, "-t", "-c", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr + site
    proc = subprocess.Popen([NGINX, "-c", str(conf)], stderr=subprocess.DEVNULL)
    url = f"https://127.0.0.1:{https}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(url + "/healthz", verify=False, timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, (tmp_path / "error.log").read_text()
                assert time.monotonic() < deadline, "nginx did not answer"
                time.sleep(0.05)
        yield url, log, f"http://127.0.0.1:{http}"
    finally:
        stop_process(proc, 5)


def test_tokens_in_query_strings_are_not_logged(nginx: tuple[str, Path, str]) -> None:
    url, log, http_url = nginx
    secret = "eyJhbGciOiJIUzI1NiJ9.not-a-real-token-0123456789"
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    with httpx.Client(verify=False, timeout=5) as client:
        # The server refuses the bad token before the upgrade (401), through the proxy.
        assert client.get(f"{url}/ws?token={secret}", headers=upgrade).status_code == 401
        assert client.get(f"{url}/sfu/ws?token={secret}", headers=upgrade).status_code == 401
        # A recording's <audio src> and download links (docs/protocol.md "Recording").
        for path in (TRANSMISSION, NET_FILE):
            answer = client.get(
                f"{url}{path}?token={secret}", headers={"Referer": f"{url}/?token={secret}"}
            )
            assert answer.status_code == 401, answer.text
        # Plain HTTP, before the redirect to HTTPS (the other server block).
        answer = client.get(f"{http_url}{TRANSMISSION}?token={secret}")
        assert answer.status_code == 301, answer.text
        client.get(f"{url}{LAST}?probe=1")
    # nginx writes each line when the request ends; the last one marks that all are in.
    deadline = time.monotonic() + 5
    while LAST not in (text := log.read_text()):
        assert time.monotonic() < deadline, text
        time.sleep(0.05)
    lines = text.splitlines()
    assert any('"GET /ws HTTP/1.1" 401' in line for line in lines), text
    assert any('"GET /sfu/ws HTTP/1.1" 401' in line for line in lines), text
    assert any(f'"GET {TRANSMISSION} HTTP/1.1" 401' in line for line in lines), text
    assert any(
        f'"GET {NET_FILE} HTTP/1.1" 401 ' in line and f'"{url}/"' in line for line in lines
    ), text
    assert any(f'"GET {TRANSMISSION} HTTP/1.1" 301' in line for line in lines), text
    assert any(f'"GET {LAST} HTTP/1.1"' in line for line in lines), text
    assert secret not in text and "token=" not in text and "?" not in text, text


TRANSMISSION = "/api/voice-rooms/shack/recordings/20260101T000000Z-abcdef/transmissions/1"
NET_FILE = "/api/voice-rooms/shack/recordings/20260101T000000Z-abcdef/files/net.opus"
# The last request: its line marks that nginx has written all of them.
LAST = "/healthz-last-probe"
