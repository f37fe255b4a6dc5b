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
# Tests that change the machine itself (network namespaces, NAT rules, an Ansible converge
# with its before/after check of the host's networking) must never overlap each other.
HOST_MARKS = ("natlab", "deploy")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Groups for `make test`'s parallel run (pytest-xdist, `--dist loadgroup`).

    A whole file goes to one worker, so module fixtures (a lab, a built wheel, a browser)
    start once; every test that touches the host shares one group, so one worker runs
    them one after another while the other worker runs the rest.
    """
    for item in items:
        if any(item.get_closest_marker(mark) for mark in HOST_MARKS):
            group = "host"
        else:
            group = item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))


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
