"""coturn as shipped: rendered from the production template, probed with aioice's TURN client.

Each answer below is coturn's own (401, 403, an allocation, relayed bytes), from a real
turnserver on free loopback ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import ssl
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jinja2
import jinja2.meta
import jinja2.nodes
import pytest
from aioice import stun
from aioice.turn import (
    UDP_TRANSPORT,
    TurnClientTcpProtocol,
    TurnClientUdpProtocol,
    create_turn_endpoint,
)

from tests.fixtures.turn import (
    TEST_SECRET,
    TurnServer,
    free_port,
    running_turnserver,
    self_signed_cert,
    turn_config,
    turnserver_available,
)
from tests.servers import ServerProcess
from tests.voiceclient import VoiceClient
from yahaml_voice.core.config import TurnConfig
from yahaml_voice.core.tokens import ice_config, turn_credentials
from yahaml_voice.server.turn import TEMPLATE, render, turn_vars

pytestmark = [
    pytest.mark.turn,
    pytest.mark.skipif(not turnserver_available(), reason="turnserver (coturn) not installed"),
]

REQUESTED_ADDRESS_FAMILY = (
    0x0017,
    "REQUESTED-ADDRESS-FAMILY",
    stun.pack_unsigned,
    stun.unpack_unsigned,
)
IPV6_FAMILY = 0x02 << 24  # RFC 6156: family byte then three reserved bytes


@pytest.fixture(scope="module")
def production() -> Iterator[TurnServer]:
    """The production template as rendered; `-L ::1` adds an IPv6 listener for RFC 6156."""
    with running_turnserver(turn_config(), extra_args=["-L", "::1"]) as server:
        yield server


@pytest.fixture(scope="module")
def loopback_lab() -> Iterator[TurnServer]:
    """allow_loopback_peers: the one way a loopback peer can stand in for an operator."""
    with running_turnserver(turn_config(allow_loopback_peers=True)) as server:
        yield server


class _Allocation(TurnClientUdpProtocol):
    """aioice's TURN client, asking for an IPv6 relay when `ipv6` (aioice never does)."""

    ipv6 = False

    async def connect(self) -> tuple[str, int]:
        if not self.ipv6:
            return await super().connect()
        stun.ATTRIBUTES_BY_NAME.setdefault(REQUESTED_ADDRESS_FAMILY[1], REQUESTED_ADDRESS_FAMILY)
        stun.ATTRIBUTES_BY_TYPE.setdefault(REQUESTED_ADDRESS_FAMILY[0], REQUESTED_ADDRESS_FAMILY)
        request = stun.Message(
            message_method=stun.Method.ALLOCATE, message_class=stun.Class.REQUEST
        )
        request.attributes["LIFETIME"] = self.lifetime
        request.attributes["REQUESTED-TRANSPORT"] = UDP_TRANSPORT
        request.attributes["REQUESTED-ADDRESS-FAMILY"] = IPV6_FAMILY
        response, _ = await self.request_with_retry(request)
        self.relayed_address = response.attributes["XOR-RELAYED-ADDRESS"]
        return self.relayed_address


@contextlib.asynccontextmanager
async def allocation(
    server: TurnServer, username: str, password: str, ipv6: bool = False
) -> AsyncIterator[_Allocation]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _Allocation((server.host, server.port), username, password, 600, 300),
        remote_addr=(server.host, server.port),
    )
    protocol.ipv6 = ipv6
    try:
        yield protocol
    finally:
        transport.close()


async def create_permission(protocol: _Allocation, peer: str) -> int:
    """coturn's answer to CreatePermission toward `peer`: 200 or the error code."""
    request = stun.Message(
        message_method=stun.Method.CREATE_PERMISSION, message_class=stun.Class.REQUEST
    )
    request.attributes["XOR-PEER-ADDRESS"] = (peer, 9)
    try:
        await protocol.request_with_retry(request)
    except stun.TransactionFailed as exc:
        code: int = exc.response.attributes["ERROR-CODE"][0]
        return code
    return 200


async def channel_bind(protocol: _Allocation, peer: str) -> int:
    try:
        await protocol.channel_bind(0x4000, (peer, 9))
    except stun.TransactionFailed as exc:
        code: int = exc.response.attributes["ERROR-CODE"][0]
        return code
    return 200


async def allocate_error(server: TurnServer, username: str, password: str) -> int | None:
    """The error code of an Allocate with these credentials (None: it succeeded)."""
    async with allocation(server, username, password) as protocol:
        try:
            await protocol.connect()
        except stun.TransactionFailed as exc:
            code: int = exc.response.attributes["ERROR-CODE"][0]
            return code
    return None


class _Echo(asyncio.DatagramProtocol):
    """A UDP peer that sends every datagram back to where it came from."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(b"echo:" + data, addr)


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))


# --- rendering ----------------------------------------------------------------------


def test_template_uses_only_turn_fields() -> None:
    """The Ansible role renders the same file: one variable, TurnConfig's field names."""
    source = TEMPLATE.read_text()
    env = jinja2.Environment()
    assert jinja2.meta.find_undeclared_variables(env.parse(source)) == {"turn"}
    tree = env.parse(source)
    used = {
        node.attr
        for node in tree.find_all(jinja2.nodes.Getattr)
        if isinstance(node.node, jinja2.nodes.Name) and node.node.name == "turn"
    }
    assert {"secret", "realm", "allowed_peer_ips", "listen_ip"} <= used
    assert used <= set(TurnConfig.model_fields), used - set(TurnConfig.model_fields)
    # Plain Jinja2 (no trim_blocks, as a bare Environment) renders too: no Ansible filters.
    fields = TurnConfig().model_dump()
    fields["secret"] = "s" * 32
    assert "static-auth-secret=" + "s" * 32 in env.from_string(source).render(turn=fields)


def test_ansible_template_module_renders_the_same_file(tmp_path: Path) -> None:
    """The Ansible role's template task and `yahaml-voice turn` produce identical bytes."""
    ansible = Path(sys.executable).parent / "ansible"
    if not ansible.exists():
        pytest.skip("ansible-core not installed in this environment")
    config = turn_config(
        port=3478, tls_port=5349, cert="/etc/ssl/t.pem", pkey="/etc/ssl/t.key", alt_tls_443=True,
        relay_ip="10.0.0.5", external_ip="198.51.100.7/10.0.0.5", allowed_peer_ips=["10.0.0.9"],
    )  # fmt: skip
    variables = tmp_path / "vars.json"
    variables.write_text(json.dumps({"turn": turn_vars(config)}))
    dest = tmp_path / "ansible.conf"
    done = subprocess.run(
        [str(ansible), "-i", "localhost,", "-c", "local", "localhost",
         "-e", f"ansible_python_interpreter={sys.executable}", "-e", f"@{variables}",
         "-m", "template", "-a", f"src={TEMPLATE} dest={dest}"],
        capture_output=True, text=True, env={**os.environ, "ANSIBLE_LOCALHOST_WARNING": "false"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert dest.read_text() == render(config)


def test_rendered_file_is_hardened() -> None:
    text = render(turn_config(cert="/etc/ssl/turn.pem", pkey="/etc/ssl/turn.key", alt_tls_443=True))
    lines = set(text.splitlines())
    for line in (
        "use-auth-secret",
        f"static-auth-secret={TEST_SECRET}",
        "realm=yahaml-voice.test",
        "fingerprint",
        "stale-nonce=600",
        "no-cli",
        "no-tcp-relay",
        "no-multicast-peers",
        "no-tlsv1",
        "no-tlsv1_1",
        "user-quota=24",
        "total-quota=1200",
        "cert=/etc/ssl/turn.pem",
        "denied-peer-ip=0.0.0.0-0.255.255.255",
        "denied-peer-ip=10.0.0.0-10.255.255.255",
        "denied-peer-ip=100.64.0.0-100.127.255.255",
        "denied-peer-ip=127.0.0.0-127.255.255.255",
        "denied-peer-ip=169.254.0.0-169.254.255.255",
        "denied-peer-ip=172.16.0.0-172.31.255.255",
        "denied-peer-ip=192.0.0.0-192.0.0.255",
        "denied-peer-ip=192.168.0.0-192.168.255.255",
        "denied-peer-ip=198.18.0.0-198.19.255.255",
        "denied-peer-ip=240.0.0.0-255.255.255.255",
        "denied-peer-ip=::ffff:0.0.0.0-::ffff:255.255.255.255",
        "denied-peer-ip=fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "denied-peer-ip=fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ):
        assert line in lines, line
    assert not any(line.startswith("allow-loopback-peers") for line in lines)
    assert '(docs/turn.md "TURN over TLS on 443")' in text  # how 443 reaches coturn
    assert "no-tls" not in lines
    assert "no-tls" in render(turn_config()).splitlines()


def test_cli_writes_private_file_and_refuses_without_secret(tmp_path: Path) -> None:
    cfg = tmp_path / "voice.yaml"
    cfg.write_text("ice:\n  turn:\n    secret: 0123456789abcdef0123\n    realm: turn.example.org\n")
    out = tmp_path / "etc" / "turnserver.conf"
    cli = [sys.executable, "-m", "yahaml_voice", "--config", str(cfg), "turn", "-o", str(out)]
    subprocess.run(cli, check=True, capture_output=True)
    assert "realm=turn.example.org" in out.read_text()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    cfg.write_text("ice:\n  turn:\n    realm: turn.example.org\n")
    done = subprocess.run(cli, capture_output=True, text=True)
    assert done.returncode == 2
    assert "ice.turn.secret is not set" in done.stderr


def test_ice_config_lists_turn_urls_with_fresh_credentials() -> None:
    config = turn_config(cert="/c.pem", pkey="/k.pem")
    config.ice.force_relay = True
    answer = ice_config(config, "p-123")
    (server,) = answer.iceServers
    assert [u.split(":")[0] for u in server.urls] == ["turn", "turn", "turns"]
    assert server.urls[1].endswith("?transport=tcp")
    assert server.username and server.username.endswith(":p-123")
    assert answer.iceTransportPolicy == "relay"
    assert answer.ttl == 600


def test_defaults_are_short_lived_and_low_quota() -> None:
    """10-minute credentials, and a per-participant quota rendered into coturn's file."""
    defaults = TurnConfig()
    assert defaults.ttl == 600 and defaults.user_quota == 24
    assert "user-quota=24" in render(turn_config()).splitlines()
    assert "user-quota=5" in render(turn_config(user_quota=5)).splitlines()


# --- coturn's answers ----------------------------------------------------------------


async def test_relay_works_with_server_credentials(loopback_lab: TurnServer) -> None:
    """Credentials from yahaml_voice.core.tokens.ice_config allocate a relay that carries datagrams."""
    answer = ice_config(loopback_lab.config, "p-relay")
    ice = answer.iceServers[0]
    assert ice.username and ice.credential
    loop = asyncio.get_running_loop()
    echo_transport, _ = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", 0))
    peer = echo_transport.get_extra_info("sockname")
    for transport_name in ("udp", "tcp"):
        relay, inbox = await create_turn_endpoint(
            _Inbox,
            (loopback_lab.host, loopback_lab.port),
            ice.username,
            ice.credential,
            transport=transport_name,
        )
        try:
            assert relay.get_extra_info("sockname")[0] == "127.0.0.1"
            relay.sendto(b"73 de test", peer)
            data, addr = await asyncio.wait_for(inbox.queue.get(), 5)
            assert (data, addr) == (b"echo:73 de test", peer)
        finally:
            relay.close()
            await asyncio.sleep(0)
    echo_transport.close()


async def test_turn_over_tls(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed (makes the test certificate)")
    cert, key = self_signed_cert(tmp_path)
    config = turn_config(cert=str(cert), pkey=str(key), allow_loopback_peers=True)
    turn = config.ice.turn
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    with running_turnserver(config) as server:
        username, password = turn_credentials(server.secret, "p-tls", 600)
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_connection(
            lambda: TurnClientTcpProtocol(
                (server.host, turn.tls_listening_port), username, password, 600, 300
            ),
            host=server.host,
            port=turn.tls_listening_port,
            ssl=context,
        )
        try:
            relayed = await protocol.connect()
            assert relayed[0] == "127.0.0.1"
            assert transport.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
        finally:
            transport.close()


async def test_expired_and_forged_credentials_are_refused(production: TurnServer) -> None:
    secret = production.secret
    good = turn_credentials(secret, "p-ok", 600)
    assert await allocate_error(production, *good) is None
    expired = turn_credentials(secret, "p-old", -60)
    assert await allocate_error(production, *expired) == 401
    forged = turn_credentials("not-the-secret-" + secret, "p-forged", 600)
    assert await allocate_error(production, *forged) == 401
    # A valid password for another username (expiry pushed a year out) is forged too.
    far = f"{int(good[0].split(':')[0]) + 365 * 86400}:p-ok"
    assert await allocate_error(production, far, good[1]) == 401


@pytest.mark.parametrize(
    "peer",
    ["127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "192.168.1.1", "0.0.0.0", "169.254.1.1",
     "100.64.0.1"],
)  # fmt: skip
async def test_denied_ipv4_peers_get_403(production: TurnServer, peer: str) -> None:
    async with allocation(production, *turn_credentials(production.secret, "p-x", 600)) as proto:
        await proto.connect()
        assert await create_permission(proto, peer) == 403
        assert await channel_bind(proto, peer) == 403
        # Control: a public address is accepted, so 403 is the deny list at work.
        assert await create_permission(proto, "198.51.100.7") == 200


@pytest.mark.parametrize(
    "peer", ["::ffff:127.0.0.1", "::ffff:10.0.0.1", "::1", "fd00::1", "fe80::1"]
)
async def test_denied_ipv6_peers_get_403(production: TurnServer, peer: str) -> None:
    """IPv4-mapped peers through an IPv6 relay: CVE-2026-27624 on coturn < 4.9."""
    creds = turn_credentials(production.secret, "p-6", 600)
    async with allocation(production, *creds, ipv6=True) as proto:
        relayed = await proto.connect()
        assert relayed[0] == "::1"
        assert await create_permission(proto, peer) == 403
        assert await channel_bind(proto, peer) == 403
        assert await create_permission(proto, "2001:db8::7") == 200


async def test_without_mapped_line_coturn_461_relays_to_loopback() -> None:
    """Why the `::ffff:` line exists: drop it and Debian's coturn lets ::ffff:127.0.0.1 through."""
    config = turn_config(port=free_port())
    text = "\n".join(
        line
        for line in render(config).splitlines()
        if not line.startswith("denied-peer-ip=::ffff:")
    )
    with running_turnserver(config, extra_args=["-L", "::1"], conf_text=text + "\n") as server:
        if server.version() >= (4, 9, 0):
            pytest.skip(f"coturn {server.version()} denies mapped peers by itself")
        creds = turn_credentials(server.secret, "p-cve", 600)
        async with allocation(server, *creds, ipv6=True) as proto:
            await proto.connect()
            assert await create_permission(proto, "::ffff:127.0.0.1") == 200


async def refresh_answer(protocol: _Allocation, lifetime: int = 600) -> int:
    """coturn's answer to a Refresh of the allocation: 200 or the error code."""
    request = stun.Message(message_method=stun.Method.REFRESH, message_class=stun.Class.REQUEST)
    request.attributes["LIFETIME"] = lifetime
    try:
        await protocol.request_with_retry(request)
    except stun.TransactionFailed as exc:
        code: int = exc.response.attributes["ERROR-CODE"][0]
        return code
    return 200


async def test_allocation_outlives_its_credentials() -> None:
    """What coturn (4.6.1) does at a credential's expiry, measured: an allocation made with
    it keeps being refreshed and given permissions after the expiry, even across nonce
    changes (stale-nonce shortened here to 3 s, so the client re-authenticates with the
    expired username); only a new Allocate needs fresh credentials. So clients renew
    credentials for the connections they make later, and never lose a running call."""
    config = turn_config(allow_loopback_peers=True)
    text = render(config).replace("stale-nonce=600", "stale-nonce=3")
    with running_turnserver(config, conf_text=text) as server:
        creds = turn_credentials(server.secret, "p-short", 2)
        async with allocation(server, *creds) as proto:
            await proto.connect()
            nonces = {proto.nonce}
            for i in range(3):
                await asyncio.sleep(3.5)  # past the expiry, and past a nonce's life
                assert await refresh_answer(proto) == 200
                assert await create_permission(proto, f"198.51.100.{i + 1}") == 200
                nonces.add(proto.nonce)
            assert len(nonces) > 1, "the nonce never went stale: re-authentication untested"
        assert await allocate_error(server, *creds) == 401


async def test_user_quota_counts_the_participant_not_the_credential() -> None:
    """Renewed credentials (another expiry, same participant) share the participant's quota."""
    with running_turnserver(turn_config(user_quota=2)) as server:
        first = turn_credentials(server.secret, "p-quota", 600)
        renewed = turn_credentials(server.secret, "p-quota", 900)
        other = turn_credentials(server.secret, "p-other", 600)
        async with contextlib.AsyncExitStack() as stack:
            for creds in (first, renewed):
                proto = await stack.enter_async_context(allocation(server, *creds))
                await proto.connect()
            assert await allocate_error(server, *renewed) == 486
            assert await allocate_error(server, *first) == 486
            assert await allocate_error(server, *other) is None


def _server_turn(lab: TurnServer, **changes: Any) -> dict[str, Any]:
    """ice.turn of a yahaml-voice server pointing at `lab`."""
    values = turn_vars(lab.config)
    values.update(changes)
    return values


async def test_turn_credentials_only_for_seated_participants(
    loopback_lab: TurnServer, server_factory: Callable[..., ServerProcess]
) -> None:
    """Any session got TURN credentials for 1 h, before joining anything (3 anonymous
    sessions exhausted a relay's total quota); now only a seat brings them."""
    server = server_factory({"ice": {"turn": _server_turn(loopback_lab)}})
    async with httpx.AsyncClient(base_url=server.url) as http:
        session = (await http.post("/api/sessions", json={"callsign": "W1AW"})).json()
        headers = {"Authorization": f"Bearer {session['token']}"}
        before = await http.get("/api/ice-servers", headers=headers)
        assert before.status_code == 403 and before.json()["error"] == "not_in_room"
        joined = (await http.post("/api/voice-rooms/shack/join", json={}, headers=headers)).json()
        assert joined["iceTtl"] == 600 and joined["iceServers"][0]["username"]
        answer = await http.get("/api/ice-servers", headers=headers)
        assert answer.status_code == 200 and answer.json()["ttl"] == 600
        ice = answer.json()["iceServers"][0]
        assert ice["username"].endswith(":" + session["participantId"])
        assert await allocate_error(loopback_lab, ice["username"], ice["credential"]) is None
        await http.post("/api/voice-rooms/shack/leave", headers=headers)
        after = await http.get("/api/ice-servers", headers=headers)
        assert after.status_code == 403


@pytest.mark.usefixtures("loopback_ice")
async def test_relayed_call_outlives_short_credentials(
    loopback_lab: TurnServer,
    server_factory: Callable[..., ServerProcess],
    client_factory: Callable[..., VoiceClient],
) -> None:
    """A call forced over the relay with 3-second credentials still has audio after three
    lifetimes, and a newcomer then connects to both through the relay: the clients renewed
    their credentials (the ones from the join answer would get 401 on a new Allocate)."""
    server = server_factory(
        {"ice": {"turn": _server_turn(loopback_lab, ttl=3), "force_relay": True}}
    )
    alice = client_factory(server.url, tone=440)
    bob = client_factory(server.url, tone=660)
    for client, call in ((alice, "W1AW"), (bob, "G4ABC")):
        await client.login(call)
        await client.connect()
    await alice.join("shack")
    await bob.join("shack")
    await alice.wait_audio(bob.participant_id, frames=25, timeout=30)
    await bob.wait_audio(alice.participant_id, frames=25, timeout=30)
    await asyncio.sleep(9.0)
    assert alice.ice_renewals >= 2 and bob.ice_renewals >= 2
    await alice.wait_audio(bob.participant_id, frames=25)
    await bob.wait_audio(alice.participant_id, frames=25)
    carol = client_factory(server.url, tone=880)
    await carol.login("K1ABC")
    await carol.connect()
    await carol.join("shack")
    for listener, speaker in ((carol, alice), (carol, bob), (alice, carol), (bob, carol)):
        await listener.wait_audio(speaker.participant_id, frames=25, timeout=30)
    for client in (alice, bob, carol):
        for peer in client.peers.values():
            assert peer.pc.connectionState == "connected"
