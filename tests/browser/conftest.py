"""Real Chromium (Debian's /usr/bin/chromium) driving the real client against a real server.

Each test gets a fresh browser and server; each operator gets its own browser context so
that sessions, storage and media devices are separate, as on two machines.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Generator, Iterator

import pytest
from playwright.async_api import Browser, async_playwright

from tests.browser.pages import SERVER_CONFIG
from tests.servers import ServerProcess

CHROMIUM = os.environ.get("YV_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def chromium_path() -> str:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
async def browser(chromium_path: str) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def denying_browser(chromium_path: str) -> AsyncIterator[Browser]:
    """Chromium whose (fake) permission prompt answers "Block" to the microphone."""
    flags = [
        "--use-fake-ui-for-media-stream=deny" if f == "--use-fake-ui-for-media-stream" else f
        for f in CHROMIUM_FLAGS
    ]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path, args=flags)
        try:
            yield browser
        finally:
            await browser.close()


# The item attribute the hook below sets (a plain name: this module may be imported twice,
# as pytest's conftest and as tests.browser.conftest).
FAILED = "yv_failed"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember whether the test body failed (fixtures then keep screenshots of it)."""
    report = yield
    if report.when == "call":
        setattr(item, FAILED, report.failed)
    return report


@pytest.fixture(scope="module")
def voice_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module (starting one costs ~2 s); each test uses its own room."""
    proc = ServerProcess(tmp_path_factory.mktemp("browser"), SERVER_CONFIG, name="browser")
    try:
        yield proc.start()
    finally:
        proc.stop()
