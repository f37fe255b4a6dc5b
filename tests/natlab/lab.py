"""The NAT lab: a "public" segment and client sites behind NAT routers, all in netns.

Topology (every address in 10.231.0.0/16, checked unused with `ip route get` first; no
veth reaches the host's own namespace, so nothing in the lab has a route out of it):

    pub (the "internet"; signaling server, SFU workers, coturn on 10.231.0.1 on its lo)
     ├─ s<i>  10.231.<i>.1/24 ── wan 10.231.<i>.2/24  router r-<site>  (NAT, filter)
     │                               lan 10.231.<100+i>.1/24
     │                                    └── eth0 10.231.<100+i>.2/24  host <site>
     └─ ...

Site kinds:
- symmetric: MASQUERADE --random-fully (a new external port per destination: CGNAT, 4G).
- cone: plain MASQUERADE (keeps the port) and nothing unsolicited gets in: port-restricted
  cone, where STUN hole punching works.
- udp-blocked: no UDP out at all; TCP only to the TURN port and the web port.
On every router a mangle/PREROUTING rule drops NEW inbound from the WAN, so an early probe
from the far side neither gets in nor leaves a conntrack entry that would change the
mapping (Linux would otherwise pick another port and break the cone).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tests.natlab.netns import LabError, nsexec, run

log = logging.getLogger(__name__)

PREFIX = "yvl"
PUBLIC_IP = "10.231.0.1"
LAB_NET = ipaddress.ip_network("10.231.0.0/16")
# The "public" part of the lab: what the lab's coturn may relay to (the production
# template denies 10.0.0.0/8; the site LANs 10.231.100+.x stay denied).
LAB_PUBLIC_PEERS = "10.231.0.0-10.231.99.255"
FORBIDDEN = [ipaddress.ip_network("203.0.113.0/24"), ipaddress.ip_network("192.0.2.0/24")]
WEB_PORT = 8080  # lab servers use 8080..8089 on PUBLIC_IP (the lab's own namespace)
TURN_PORT = 3478
KINDS = ("symmetric", "cone", "udp-blocked")


@dataclass
class Site:
    name: str
    kind: str
    index: int
    ns: str
    router: str
    moved_to: str | None = None  # the site whose router the host is plugged into now

    @property
    def lan_ip(self) -> str:
        return f"10.231.{100 + self.index}.2"

    @property
    def wan_ip(self) -> str:
        return f"10.231.{self.index}.2"

    @property
    def roam_ip(self) -> str:
        """The host's address after `Lab.move()`: its own LAN on the other router."""
        return f"10.231.{150 + self.index}.2"


@dataclass
class Lab:
    """Build with `build()`, always `teardown()` in a finally (it is idempotent)."""

    sites_spec: Sequence[tuple[str, str]]
    tag: str = field(default_factory=lambda: str(os.getpid()))
    sites: dict[str, Site] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)

    @property
    def pub(self) -> str:
        return f"{PREFIX}{self.tag}-pub"

    def subnets(self) -> list[ipaddress.IPv4Network]:
        nets = [ipaddress.ip_network(f"{PUBLIC_IP}/32")]
        for i in range(1, len(self.sites_spec) + 1):
            nets += [
                ipaddress.ip_network(f"10.231.{i}.0/24"),
                ipaddress.ip_network(f"10.231.{100 + i}.0/24"),
                ipaddress.ip_network(f"10.231.{150 + i}.0/24"),  # after a move()
            ]
        return nets  # type: ignore[return-value]

    def check_ranges(self) -> None:
        check_free(self.subnets())

    # ------------------------------------------------------------------ build
    def _add_ns(self, name: str) -> None:
        run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        for key in ("net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"):
            nsexec(name, ["sysctl", "-qw", key])

    def _veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
        # Created straight inside the namespaces: the host never holds either end.
        run(["ip", "link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b,
             "netns", ns_b])  # fmt: skip
        for ns, ifname in ((ns_a, if_a), (ns_b, if_b)):
            run(["ip", "-n", ns, "link", "set", ifname, "up"])

    def build(self) -> Lab:
        cleanup_stale()
        self.check_ranges()
        self._add_ns(self.pub)
        run(["ip", "-n", self.pub, "addr", "add", f"{PUBLIC_IP}/32", "dev", "lo"])
        nsexec(self.pub, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        for i, (name, kind) in enumerate(self.sites_spec, start=1):
            if kind not in KINDS:
                raise ValueError(f"unknown site kind {kind!r}")
            site = Site(name, kind, i, f"{PREFIX}{self.tag}-{name}", f"{PREFIX}{self.tag}-r{i}")
            self.sites[name] = site
            self._add_ns(site.router)
            self._add_ns(site.ns)
            self._veth(self.pub, f"s{i}", site.router, "wan")
            run(["ip", "-n", self.pub, "addr", "add", f"10.231.{i}.1/24", "dev", f"s{i}"])
            run(["ip", "-n", site.router, "addr", "add", f"{site.wan_ip}/24", "dev", "wan"])
            run(["ip", "-n", site.router, "route", "add", "default", "via", f"10.231.{i}.1"])
            self._plug(site, site, "lan", "eth0", site.lan_ip)
            nsexec(site.router, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
            self._nat(site)
        return self

    def _plug(self, host: Site, router: Site, lan: str, eth: str, address: str) -> None:
        """A LAN (veth `lan` on `router`'s router, `eth` in `host`'s namespace, /24 of
        `address` with .1 on the router) and the host's default route through it."""
        gateway = address.rsplit(".", 1)[0] + ".1"
        self._veth(router.router, lan, host.ns, eth)
        run(["ip", "-n", router.router, "addr", "add", f"{gateway}/24", "dev", lan])
        run(["ip", "-n", host.ns, "addr", "add", f"{address}/24", "dev", eth])
        run(["ip", "-n", host.ns, "route", "add", "default", "via", gateway])

    # ------------------------------------------------------------------ network change
    def move(self, name: str, to: str) -> None:
        """Site `name`'s host changes networks, as a phone going from Wi-Fi to mobile data:
        its LAN is unplugged (its address and every socket bound to it are gone) and it is
        plugged into site `to`'s router on a LAN of its own (`roam_ip`), so it gets a new
        local address and `to`'s public address (and NAT kind). `restore()` undoes it."""
        site, other = self.sites[name], self.sites[to]
        self._unplug(site)
        self._plug(site, other, f"lan{site.index}", "eth1", site.roam_ip)
        site.moved_to = to

    def restore(self, name: str) -> None:
        """Plug site `name`'s host back into its own router (its first address again)."""
        site = self.sites[name]
        if site.moved_to is None:
            return
        self._unplug(site)
        self._plug(site, site, "lan", "eth0", site.lan_ip)
        site.moved_to = None

    def _unplug(self, site: Site) -> None:
        eth = "eth1" if site.moved_to else "eth0"
        run(["ip", "-n", site.ns, "link", "del", eth])  # the router's end goes with it

    def _nat(self, site: Site) -> None:
        def ipt(*args: str) -> None:
            nsexec(site.router, ["iptables", "-w", *args])

        ipt("-t", "mangle", "-A", "PREROUTING", "-i", "wan", "-m", "conntrack",
            "--ctstate", "NEW,INVALID", "-j", "DROP")  # fmt: skip
        masquerade = ["-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"]
        if site.kind == "symmetric":
            ipt(*masquerade, "--random-fully")
        else:
            ipt(*masquerade)
        if site.kind == "udp-blocked":
            # `lan+`: also a roaming host's LAN (`move()`)
            ipt("-A", "FORWARD", "-i", "lan+", "-p", "udp", "-j", "DROP")
            ipt("-A", "FORWARD", "-i", "lan+", "-p", "tcp", "-d", PUBLIC_IP, "-m", "multiport",
                "--dports", f"{TURN_PORT},{WEB_PORT}:{WEB_PORT + 9}",
                "-j", "ACCEPT")  # fmt: skip
            ipt("-A", "FORWARD", "-i", "lan+", "-j", "DROP")

    # ------------------------------------------------------------------ teardown
    def teardown(self) -> None:
        """Delete every namespace (their veths and iptables rules go with them)."""
        for name in reversed(self.namespaces):
            kill_ns_processes(name)
            run(["ip", "netns", "del", name], check=False)
        self.namespaces.clear()

    def site(self, name: str) -> Site:
        return self.sites[name]


def check_free(nets: Iterable[ipaddress.IPv4Network]) -> None:
    """Refuse to build over anything the host routes other than by its default route."""
    for net in nets:
        assert net.subnet_of(LAB_NET)
        assert not any(net.overlaps(f) for f in FORBIDDEN)
        route = run(["ip", "-4", "route", "get", str(net.network_address)]).stdout
        if route.split()[0] == "local" or " dev lo " in route:
            raise LabError(f"{net} is in use on this host: {route.strip()}")
        table = run(["ip", "-4", "route", "show", "to", "match", str(net.network_address)])
        for line in table.stdout.splitlines():
            if not line.startswith("default"):
                raise LabError(f"{net} is routed on this host: {line}")


def kill_ns_processes(ns: str) -> None:
    """SIGKILL processes still inside `ns` (only the lab's own: servers it started)."""
    done = run(["ip", "netns", "pids", ns], check=False)
    for pid in done.stdout.split():
        try:
            os.kill(int(pid), 9)
        except (ProcessLookupError, ValueError):
            pass


def lab_namespaces() -> list[str]:
    done = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.startswith(PREFIX)]


def cleanup_stale(names: Iterable[str] | None = None) -> None:
    """Remove namespaces left by a lab whose process died (tag = its pid)."""
    for name in names if names is not None else lab_namespaces():
        match = re.match(rf"{PREFIX}(\d+)-", name)
        if not match:
            continue
        pid = int(match.group(1))
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        log.warning("removing stale lab namespace %s", name)
        kill_ns_processes(name)
        run(["ip", "netns", "del", name], check=False)
