"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import ServerProcess
from tests.voiceclient import VoiceClient

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
# The longest files run first, so on two workers (`make test`) they overlap the rest
# instead of ending the run alone (the deploy converge alone takes minutes).
LONG_FIRST = (
    "tests/deploy/test_deploy.py",
    "tests/test_fuzz.py",
    "tests/test_packaging.py",
    "tests/test_soak.py",
    "tests/browser/test_browser_net.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return LONG_FIRST.index(path) if path in LONG_FIRST else len(LONG_FIRST)

    items.sort(key=rank)  # stable: the order within a file and among the rest stays


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """A folder for this test's screenshots and logs (tests/artifacts/<test>)."""
    path = ARTIFACTS / request.node.name.replace("/", "_")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def loopback_ice() -> Iterator[None]:
    """aiortc peers in this process offer 127.0.0.1 only, like the SFU workers in tests."""
    import aioice.ice

    from yahaml_voice.sfu.aiortc_private import restrict_ice_addresses

    original = aioice.ice.get_host_addresses
    restrict_ice_addresses(["127.0.0.1"])
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start `yahaml-voice serve` processes; all are stopped at the end of the test."""
    started: list[ServerProcess] = []

    def start(config: dict[str, Any] | None = None, **kw: Any) -> ServerProcess:
        name = kw.pop("name", f"server{len(started)}")
        proc = ServerProcess(tmp_path, config, name=name, **kw)
        started.append(proc)
        return proc.start()

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()
        if os.environ.get("YV_SHOW_SERVER_LOGS"):
            for proc in started:
                print(proc.log_tail(200))


@pytest.fixture
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """The embedded default (open auth, in-memory) with a short grace period, no SFU."""
    return server_factory({"server": {"grace_period": "2s"}})


@pytest.fixture
async def client_factory() -> AsyncIterator[Callable[..., VoiceClient]]:
    clients: list[VoiceClient] = []

    def make(base_url: str, **kw: Any) -> VoiceClient:
        client = VoiceClient(base_url, **kw)
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            await client.close()
