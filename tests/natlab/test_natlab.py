"""Operators behind symmetric NAT and UDP-blocking firewalls get through, via coturn.

Real network namespaces, NAT routers (iptables), coturn, `yahaml-voice serve` and
tests/voiceclient.py; see tests/natlab/lab.py for the topology. Needs root.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.turn import TEST_SECRET, turnserver_available
from tests.natlab.browser import chromium_available
from tests.natlab.netns import nsexec, run, unavailable_reason
from tests.natlab.scenarios import Outcome, raw_pair, server_pair
from tests.natlab.services import turn_urls
from tests.natlab.session import LabSession
from yahaml_voice.core.tokens import turn_credentials

pytestmark = pytest.mark.natlab


@pytest.fixture(scope="module")
def lab() -> Iterator[LabSession]:
    reason = unavailable_reason()
    if reason is None and not turnserver_available():
        reason = "natlab needs turnserver (Debian package coturn)"
    if reason is not None:
        pytest.skip(reason)
    session = LabSession()
    try:
        yield session.start()
    finally:
        session.close()


def _explain(outcome: Outcome) -> str:
    return (
        f"{outcome.label}: states={outcome.states} pairs={outcome.pairs} "
        f"audio={outcome.audio} t={outcome.seconds}"
    )


def test_lab_has_no_way_out(lab: LabSession) -> None:
    """The lab is sealed: no namespace of it routes beyond 10.231.0.0/16, the host got no
    interface or route, and the sites' LANs are unreachable from the public segment."""
    outside = "192.0.2.1"  # the host's own network: sites route it to their NAT router...
    for site in lab.lab.sites.values():
        route = nsexec(site.ns, ["ip", "-4", "route", "get", outside]).stdout
        assert f"via 10.231.{100 + site.index}.1 " in route, route
        route = nsexec(site.router, ["ip", "-4", "route", "get", outside]).stdout
        assert f"via 10.231.{site.index}.1 " in route, route
    # ...and the lab's "internet" has no route at all beyond its own links.
    done = nsexec(lab.lab.pub, ["ip", "-4", "route", "get", outside], check=False)
    assert done.returncode != 0, done.stdout
    host_routes = run(["ip", "-4", "route", "show"]).stdout
    assert "10.231." not in host_routes
    assert "10.231." not in run(["ip", "-4", "addr", "show"]).stdout
    lan = lab.lab.site("sym1").lan_ip
    assert nsexec(lab.lab.pub, ["ip", "-4", "route", "get", lan], check=False).returncode != 0


async def test_raw_aiortc_peers_relay_between_symmetric_sites(lab: LabSession) -> None:
    """The lab's own proof, no server involved: two bare aiortc peers, SDP handed over
    in-process, relay-only through coturn, audio both ways."""
    username, password = turn_credentials(TEST_SECRET, "raw", 600)
    servers = [{"urls": turn_urls("udp"), "username": username, "credential": password}]
    outcome = await raw_pair(
        "raw sym-sym relay", lab.loops["sym1"], lab.loops["sym2"], servers, relay_only=True
    )
    assert outcome.connected, _explain(outcome)
    assert outcome.pairs == ["relay>relay", "relay>relay"], _explain(outcome)
    assert outcome.audio_flows, _explain(outcome)


async def test_symmetric_nat_without_turn_does_not_connect(lab: LabSession) -> None:
    """STUN only, both behind symmetric NAT: ICE fails. This is what proves the lab is real."""
    outcome = await lab.case("sym1", "sym2", "off", "mesh")
    assert not outcome.connected, _explain(outcome)
    assert outcome.states == ["failed", "failed"], _explain(outcome)


async def test_cone_nat_connects_with_stun_alone(lab: LabSession) -> None:
    """Control: the same STUN-only setup works between port-restricted cone sites."""
    outcome = await lab.case("cone1", "cone2", "off", "mesh")
    assert outcome.connected, _explain(outcome)
    assert not any("relay" in pair for pair in outcome.pairs), _explain(outcome)
    assert outcome.audio_flows, _explain(outcome)


async def test_symmetric_nat_with_turn_connects_through_relay(lab: LabSession) -> None:
    outcome = await lab.case("sym1", "sym2", "on", "mesh")
    assert outcome.connected, _explain(outcome)
    assert outcome.relayed, _explain(outcome)
    assert outcome.audio_flows, _explain(outcome)


async def test_force_relay_uses_relay_candidates_on_both_ends(lab: LabSession) -> None:
    """ice.force_relay: iceTransportPolicy 'relay', so no host or srflx address is used."""
    outcome = await lab.case("sym1", "cone1", "relay", "mesh")
    assert outcome.connected, _explain(outcome)
    assert all(pair.startswith("relay") and pair.endswith("relay") for pair in outcome.pairs), (
        _explain(outcome)
    )
    assert outcome.audio_flows, _explain(outcome)


async def test_udp_blocked_site_connects_over_turn_tcp(lab: LabSession) -> None:
    outcome = await lab.case("udp", "sym1", "on", "mesh")
    assert outcome.connected, _explain(outcome)
    assert outcome.pairs[0].startswith("relay/tcp"), _explain(outcome)
    assert outcome.audio_flows, _explain(outcome)


async def test_sfu_mode_from_symmetric_nat(lab: LabSession) -> None:
    """Both operators behind symmetric NAT reach the SFU worker and hear each other."""
    outcome = await lab.case("sym1", "sym2", "on", "sfu")
    assert outcome.connected, _explain(outcome)
    assert outcome.audio_flows, _explain(outcome)


async def test_sfu_mode_from_udp_blocked_site(lab: LabSession) -> None:
    outcome = await lab.case("udp", "sym2", "on", "sfu")
    assert outcome.connected, _explain(outcome)
    assert outcome.pairs[0].startswith("relay/tcp"), _explain(outcome)
    assert outcome.audio_flows, _explain(outcome)


async def test_worker_and_client_connect_from_udp_blocked_site_when_tcp_url_is_not_first(
    lab: LabSession,
) -> None:
    """Every TURN URL is tried (aiortc alone takes the first, here the UDP one the site
    blocks): the Python client, handed all URLs, reaches the SFU worker over TURN/TCP."""
    server = lab.server("on", "sfu")
    assert server.config()["ice"]["turn"]["urls"][0].endswith("transport=udp")
    outcome = await server_pair(
        "udp-blocked<->symmetric turn=on sfu, every URL",
        server.url,
        lab.room("sfu"),
        lab.loops["udp"],
        lab.loops["sym2"],
        sfu=True,
    )
    assert outcome.connected, _explain(outcome)
    assert outcome.pairs[0].startswith("relay/tcp"), _explain(outcome)
    assert outcome.audio_flows, _explain(outcome)


@pytest.mark.browser
@pytest.mark.parametrize("site", ["sym1", "udp"])
async def test_chromium_in_a_nat_site_talks_through_turn(lab: LabSession, site: str) -> None:
    """Real Chromium running client/ at a NAT site, an aiortc operator behind symmetric NAT:
    connected through TURN (TURN over TCP from the UDP-blocked site), audio both ways."""
    if not chromium_available():
        pytest.skip("natlab browser case needs /usr/bin/chromium")
    outcome = await lab.browser_case(site, "sym2", "on", "mesh")
    assert outcome.connected, _explain(outcome)
    chromium_pair = outcome.pairs[0]
    assert "relay" in chromium_pair, _explain(outcome)
    if site == "udp":
        assert chromium_pair.startswith("relay/tcp"), _explain(outcome)
    assert outcome.audio_flows, _explain(outcome)
    assert outcome.error is None, _explain(outcome)


@pytest.mark.parametrize("mode", ["mesh", "sfu"])
async def test_network_change_mid_call_keeps_the_seat_and_audio_resumes(
    lab: LabSession, mode: str
) -> None:
    """An operator's host moves to another NAT while talking (new local and public address,
    Lab.move): the Python client reopens its socket, keeps its seat and gets its audio back
    both ways; the other operator sees no one leave. (`make natlab` prints how long it took.)"""
    outcome = await lab.roam_case(mode, timeout=15.0)  # type: ignore[arg-type]
    explain = f"{outcome}"
    assert outcome.before, explain
    assert outcome.seat_kept, explain
    assert not outcome.partner_saw_leave, explain
    assert outcome.audio_back is not None, explain
