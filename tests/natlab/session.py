"""One lab for a whole test module or matrix run: sites, coturn, servers, client loops.

Everything is started lazily and torn down by `close()` (call it in a finally): client
loops, server processes, coturn, then the namespaces.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Literal

from tests.fixtures.turn import TurnServer
from tests.natlab import scenarios
from tests.natlab.lab import WEB_PORT, Lab
from tests.natlab.netns import NetnsLoop
from tests.natlab.roaming import RoamOutcome, aiortc_roam
from tests.natlab.scenarios import Outcome
from tests.natlab.services import LabServer, start_turn

log = logging.getLogger(__name__)

SITES = [
    ("sym1", "symmetric"),
    ("sym2", "symmetric"),
    ("cone1", "cone"),
    ("cone2", "cone"),
    ("udp", "udp-blocked"),
    ("mob", "symmetric"),  # the host that changes networks mid-call (Lab.move)
]
# The network change: the host at "mob" moves behind sym2's router, talking to sym1.
ROAM = ("mob", "sym2", "sym1")
Turn = Literal["off", "on", "relay"]
Mode = Literal["mesh", "sfu"]
ROOMS_PER_MODE = 200  # a fresh room per case: 3 clients x --repeat 3 x every cell
# Server variants: (TURN setting, SFU workers) -> port on the public address.
PORTS: dict[tuple[str, int], int] = {
    ("off", 0): WEB_PORT,
    ("on", 0): WEB_PORT + 1,
    ("relay", 0): WEB_PORT + 2,
    ("off", 1): WEB_PORT + 3,
    ("on", 1): WEB_PORT + 4,
    ("relay", 1): WEB_PORT + 5,
}


def rooms() -> list[dict[str, object]]:
    """Fresh rooms for every case: mesh rooms, and rooms that go to the SFU at 2 people."""
    mesh = [{"id": f"mesh{i}"} for i in range(ROOMS_PER_MODE)]
    sfu = [{"id": f"sfu{i}", "sfu_threshold": 2} for i in range(ROOMS_PER_MODE)]
    return mesh + sfu


@dataclass
class LabSession:
    lab: Lab = field(default_factory=lambda: Lab(SITES))
    turn: TurnServer | None = None
    loops: dict[str, NetnsLoop] = field(default_factory=dict)
    servers: dict[tuple[str, int], LabServer] = field(default_factory=dict)
    _retransmissions: int | None = None
    _room_numbers: dict[str, itertools.count[int]] = field(
        default_factory=lambda: {"mesh": itertools.count(), "sfu": itertools.count()}
    )

    def start(self) -> LabSession:
        self._retransmissions = scenarios.fast_ice_failure()
        self.lab.build()
        self.turn = start_turn(self.lab)
        for name, site in self.lab.sites.items():
            self.loops[name] = NetnsLoop(site.ns).start()
        return self

    def server(self, turn: Turn, mode: Mode) -> LabServer:
        key = (turn, 1 if mode == "sfu" else 0)
        if key not in self.servers:
            server = LabServer(
                self.lab,
                PORTS[key],
                turn=turn != "off",
                force_relay=turn == "relay",
                workers=key[1],
                rooms=rooms(),
            )
            self.servers[key] = server
            server.start(next(iter(self.loops.values())))
        return self.servers[key]

    def room(self, mode: Mode) -> str:
        return f"{mode}{next(self._room_numbers[mode])}"

    async def case(
        self, site_a: str, site_b: str, turn: Turn, mode: Mode, timeout: float = 20.0
    ) -> Outcome:
        """Clients at `site_a` and `site_b` meet through the server; what happened."""
        server = self.server(turn, mode)
        kinds = {name: site.kind for name, site in self.lab.sites.items()}
        label = f"{kinds[site_a]}<->{kinds[site_b]} turn={turn} {mode}"
        # A UDP-blocked client can only use TURN over TCP (aiortc takes one TURN URL).
        transport = {n: "tcp" if kinds[n] == "udp-blocked" else None for n in (site_a, site_b)}
        return await scenarios.server_pair(
            label,
            server.url,
            self.room(mode),
            self.loops[site_a],
            self.loops[site_b],
            sfu=mode == "sfu",
            turn_transport_a=transport[site_a],
            turn_transport_b=transport[site_b],
            timeout=timeout,
        )

    async def browser_case(
        self,
        browser_site: str,
        client_site: str,
        turn: Turn,
        mode: Mode,
        timeout: float = 30.0,
        browser: str = "chromium",
    ) -> Outcome:
        """A browser (chromium/firefox) with the real client/ at `browser_site`, an aiortc
        client at the other."""
        from tests.natlab.browser import browser_pair  # Playwright only where a case needs it

        server = self.server(turn, mode)
        kinds = {name: site.kind for name, site in self.lab.sites.items()}
        label = f"{browser}@{kinds[browser_site]}<->{kinds[client_site]} turn={turn} {mode}"
        return await browser_pair(
            label,
            server.url,
            self.room(mode),
            self.lab.site(browser_site).ns,
            self.loops[client_site],
            sfu=mode == "sfu",
            timeout=timeout,
            browser_name=browser,
        )

    async def roam_case(self, mode: Mode, turn: Turn = "on", timeout: float = 10.0) -> RoamOutcome:
        """aiortc operators at mob and sym1 talk; mob moves behind sym2's router."""
        mover, to, partner = ROAM
        server = self.server(turn, mode)
        return await aiortc_roam(
            f"aiortc@mob: symmetric -> other symmetric NAT, turn={turn} {mode}",
            server.url,
            self.room(mode),
            self.lab,
            mover,
            to,
            self.loops[mover],
            self.loops[partner],
            sfu=mode == "sfu",
            timeout=timeout,
        )

    async def browser_roam_case(
        self, mode: Mode, turn: Turn = "on", timeout: float = 10.0
    ) -> RoamOutcome:
        """Chromium at mob talks with an aiortc operator at sym1; mob moves behind sym2."""
        from tests.natlab.roaming import browser_roam

        mover, to, partner = ROAM
        server = self.server(turn, mode)
        return await browser_roam(
            f"chromium@mob: symmetric -> other symmetric NAT, turn={turn} {mode}",
            server.url,
            self.room(mode),
            self.lab,
            mover,
            to,
            self.loops[partner],
            sfu=mode == "sfu",
            timeout=timeout,
        )

    def close(self) -> None:
        try:
            for loop in self.loops.values():
                loop.stop()
            for server in self.servers.values():
                server.terminate()  # all at once: each takes a moment to wind down
            for server in self.servers.values():
                server.stop()
            if self.turn is not None:
                self.turn.stop()
        finally:
            self.lab.teardown()
            if self._retransmissions is not None:  # other tests in this process get aioice's own
                scenarios.fast_ice_failure(self._retransmissions)
