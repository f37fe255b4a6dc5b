"""Real Firefox ESR (Debian's /usr/bin/firefox-esr) for the browser tests, through Marionette.

Playwright's Firefox is a patched build that cannot be downloaded here, so the stock browser
is driven over its built-in Marionette server with Mozilla's `marionette_driver`. That driver
blocks, so each browser gets one thread of its own and the async tests await calls into it.

`Firefox` quacks like the part of Playwright's `Browser` that tests/browser/pages.py's
`Operator` uses (`new_context` -> `add_init_script`, `new_page` -> `goto`, `evaluate`,
`fill`, `click`, `wait_for_selector`, `screenshot`, `on("pageerror")`), so a test written for
Chromium runs in Firefox by passing a `Firefox` instead. Every context is a Firefox process
with a fresh profile (sessions, storage and devices apart, as on two machines). Differences:
init scripts run after each navigation (the client asks for the microphone only on join),
and page errors are those the page reports after it loaded, collected on each `evaluate`.

In the NAT lab, `firefox_in(ns)` starts the process through `ip netns exec` and moves the
driver's thread into the same namespace before it connects (Marionette is TCP on the
namespace's own loopback); the port comes from the profile's `MarionetteActivePort` file.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import importlib.util
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

FIREFOX = os.environ.get("YV_FIREFOX", "/usr/bin/firefox-esr")
DEFAULT_VIEWPORT = {"width": 1000, "height": 760}
START_TIMEOUT = 60.0
SCRIPT_TIMEOUT = 30.0

# user.js of every fresh profile. The media prefs stand in for Chromium's fake-device flags
# (a fake microphone, no prompt, and a mock audio output: without a sound device Firefox keeps
# every AudioContext suspended, so the client's level meter would read silence);
# the ICE prefs let Firefox pair with loopback addresses (the SFU workers in tests offer only
# 127.0.0.1) and show its real host address instead of an mDNS name; the rest keeps a test
# browser quiet (no first-run pages, updates, telemetry or background fetches).
PREFS: dict[str, bool | int | str] = {
    "marionette.port": 0,
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    "media.peerconnection.ice.loopback": True,
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    "media.cubeb.force_mock_context": True,
    "media.autoplay.default": 0,
    "media.autoplay.block-webaudio": False,
    "media.autoplay.blocking_policy": 0,
    "media.gmp-manager.url": "",
    "media.gmp-gmpopenh264.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.startup.page": 0,
    "browser.aboutwelcome.enabled": False,
    "browser.newtabpage.enabled": False,
    "browser.tabs.warnOnClose": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.update.enabled": False,
    "browser.region.network.url": "",
    "browser.search.update": False,
    "app.update.disabledForTesting": True,
    "app.normandy.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "extensions.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
    "services.settings.server": "",
    "remote.prefs.recommended": True,
    "messaging-system.rsexperimentloader.enabled": False,
    "app.shield.optoutstudies.enabled": False,
    "browser.sessionstore.resume_from_crash": False,
    "browser.pagethumbnails.capturing_disabled": True,
    "dom.disable_open_during_load": False,
}

# Installed after every navigation: page errors the test asks about (Operator.errors).
ERROR_COLLECTOR = """
if (!window.__yvErrors) {
  window.__yvErrors = [];
  window.addEventListener('error', (e) => window.__yvErrors.push(String(e.message || e)));
  window.addEventListener('unhandledrejection', (e) => {
    const r = e.reason;
    window.__yvErrors.push(String((r && (r.stack || r.message)) || r));
  });
}
"""

CLEAR_STORAGE = "try { sessionStorage.clear(); localStorage.clear(); } catch (e) {}"

VISIBLE_JS = """(selector) => {
  const el = document.querySelector(selector);
  if (!el) return false;
  const style = getComputedStyle(el);
  return el.getClientRects().length > 0 && style.visibility !== 'hidden';
}"""


def firefox_available() -> bool:
    """Debian's firefox-esr and the driver (the test extras) are both here."""
    return os.path.exists(FIREFOX) and importlib.util.find_spec("marionette_driver") is not None


def _user_js(prefs: dict[str, bool | int | str]) -> str:
    def value(v: bool | int | str) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return "".join(f'user_pref("{k}", {value(v)});\n' for k, v in prefs.items())


def _evaluate_script(source: str) -> str:
    """An async Marionette script: `source` (a JS function or expression, as Playwright's
    `evaluate` takes) applied to arguments[0]; page errors since the last call ride along."""
    return f"""
const resolve = arguments[arguments.length - 1];
const arg = arguments[0];
const drain = () => (window.__yvErrors || []).splice(0);
(async () => {{
  const fn = ({source});
  return typeof fn === 'function' ? await fn(arg) : await fn;
}})().then(
  (value) => resolve({{ value: value === undefined ? null : value, errors: drain() }}),
  (e) => resolve({{ error: String((e && (e.stack || e.message)) || e), errors: drain() }}),
);
"""


class FirefoxError(RuntimeError):
    """The browser or a script in it failed; the message says what."""


class FirefoxProcess:
    """One Firefox with a fresh profile and its Marionette session, owned by one thread."""

    def __init__(
        self,
        ns: str | None = None,
        viewport: dict[str, int] | None = None,
        prefs: dict[str, bool | int | str] | None = None,
    ) -> None:
        self.ns = ns
        self.viewport = viewport or DEFAULT_VIEWPORT
        self.prefs = {**PREFS, **(prefs or {})}
        self.folder = Path(tempfile.mkdtemp(prefix="yv-firefox-"))
        self.profile = self.folder / "profile"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client: Any = None
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix=f"firefox-{ns or 'host'}",
            initializer=functools.partial(_enter, ns) if ns else None,
        )

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking driver call on this browser's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, fn, *args)

    async def start(self) -> FirefoxProcess:
        await self.call(self._start)
        return self

    def _start(self) -> None:
        from marionette_driver.marionette import Marionette

        self.profile.mkdir()
        (self.profile / "user.js").write_text(_user_js(self.prefs))
        argv = [
            FIREFOX,
            "--headless",
            "--marionette",
            "--no-remote",
            "--profile",
            str(self.profile),
            f"--window-size={self.viewport['width']},{self.viewport['height']}",
            "about:blank",
        ]
        if self.ns:
            argv = ["ip", "netns", "exec", self.ns, *argv]
        env = {
            **os.environ,
            "MOZ_HEADLESS": "1",
            "MOZ_CRASHREPORTER_DISABLE": "1",
            "MOZ_DISABLE_AUTO_SAFE_MODE": "1",
            "HOME": str(self.folder),
        }
        log = open(self.folder / "firefox.log", "wb")  # the child keeps its own descriptor
        self.proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        port = self._wait_port()
        self.client = Marionette(host="127.0.0.1", port=port, startup_timeout=int(START_TIMEOUT))
        self.client.start_session()
        self.client.timeout.script = SCRIPT_TIMEOUT
        # Headless Firefox may ignore --window-size (it opened at 1366 px wide here).
        self.client.set_window_rect(width=self.viewport["width"], height=self.viewport["height"])

    def _wait_port(self) -> int:
        """The Marionette port Firefox chose (marionette.port 0), once it listens."""
        marker = self.profile / "MarionetteActivePort"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise FirefoxError(f"firefox exited ({self.proc.returncode}): {self.log_tail()}")
            with contextlib.suppress(OSError, ValueError):
                return int(marker.read_text().strip())
            time.sleep(0.1)
        raise FirefoxError(f"no Marionette port after {START_TIMEOUT}s: {self.log_tail()}")

    async def reuse(self, viewport: dict[str, int] | None) -> None:
        """Ready for another context: the page's storage and cookies cleared, a blank page
        (which ends its connections and microphone), the window at `viewport`."""
        size = viewport or DEFAULT_VIEWPORT

        def reset() -> None:
            client = self.client
            client.execute_script(CLEAR_STORAGE, sandbox=None)
            client.delete_all_cookies()
            client.navigate("about:blank")
            client.set_window_rect(width=size["width"], height=size["height"])

        await self.call(reset)

    def log_tail(self, chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return (self.folder / "firefox.log").read_text(errors="replace")[-chars:]
        return ""

    async def close(self) -> None:
        """End the session and the process (its whole group), drop the profile; idempotent."""
        try:
            await self.call(self._close)
        finally:
            self.executor.shutdown(wait=False)
            shutil.rmtree(self.folder, ignore_errors=True)

    def _close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.delete_session()
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _enter(ns: str) -> None:
    from tests.natlab.netns import enter

    enter(ns)


class Keyboard:
    """page.keyboard: keys go to the focused element."""

    KEYS = {"Enter": "\ue007", "Space": " ", "Escape": "\ue00c", "Tab": "\ue004"}

    def __init__(self, browser: FirefoxProcess) -> None:
        self.browser = browser

    async def press(self, key: str) -> None:
        text = self.KEYS.get(key, key)

        def press() -> None:
            self.browser.client.get_active_element().send_keys(text)

        await self.browser.call(press)

    async def down(self, key: str) -> None:
        await self._action(key, "key_down")

    async def up(self, key: str) -> None:
        await self._action(key, "key_up")

    async def _action(self, key: str, kind: str) -> None:
        text = self.KEYS.get(key, key)

        def act() -> None:
            chain = self.browser.client.actions.sequence("key", "keyboard")
            with chain as keys:
                getattr(keys, kind)(text)

        await self.browser.call(act)


class FirefoxPage:
    """The one tab of a FirefoxProcess, with the Playwright Page methods the tests use."""

    def __init__(self, browser: FirefoxProcess, init_scripts: list[str]) -> None:
        self.browser = browser
        self.init_scripts = init_scripts
        self.keyboard = Keyboard(browser)
        self._listeners: dict[str, list[Callable[[Any], Any]]] = {}

    def on(self, event: str, callback: Callable[[Any], Any]) -> None:
        self._listeners.setdefault(event, []).append(callback)

    async def goto(self, url: str) -> None:
        def go() -> None:
            client = self.browser.client
            client.navigate(url)
            client.execute_script(ERROR_COLLECTOR, sandbox=None)
            for script in self.init_scripts:
                client.execute_script(script, sandbox=None)

        await self.browser.call(go)

    async def evaluate(self, source: str, arg: Any = None) -> Any:
        script = _evaluate_script(source)

        def run() -> Any:
            return self.browser.client.execute_async_script(
                script, script_args=(arg,), sandbox=None
            )

        result = await self.browser.call(run)
        for message in result.get("errors") or []:
            for callback in self._listeners.get("pageerror", []):
                callback(message)
        if "error" in result:
            raise FirefoxError(f"evaluate failed: {result['error']}")
        return result.get("value")

    async def wait_for_selector(self, selector: str, timeout: float = 30_000) -> None:
        """Until an element matching `selector` is visible (`timeout` in ms, as Playwright)."""
        deadline = time.monotonic() + timeout / 1000
        while True:
            if await self.evaluate(VISIBLE_JS, selector):
                return
            if time.monotonic() > deadline:
                raise FirefoxError(f"timed out after {timeout} ms waiting for {selector}")
            await asyncio.sleep(0.1)

    async def _element(self, selector: str) -> Any:
        from marionette_driver.by import By

        await self.wait_for_selector(selector)
        return await self.browser.call(self.browser.client.find_element, By.CSS_SELECTOR, selector)

    async def click(self, selector: str) -> None:
        element = await self._element(selector)
        await self.browser.call(element.click)

    async def fill(self, selector: str, value: str) -> None:
        element = await self._element(selector)

        def fill() -> None:
            element.clear()
            element.send_keys(value)

        await self.browser.call(fill)

    async def focus(self, selector: str) -> None:
        await self.wait_for_selector(selector)
        await self.evaluate("(s) => document.querySelector(s).focus()", selector)

    async def screenshot(self, path: str, full_page: bool = True) -> bytes:
        def shoot() -> bytes:
            data: bytes = self.browser.client.screenshot(format="binary", full=full_page)
            Path(path).write_bytes(data)
            return data

        return await self.browser.call(shoot)

    async def close(self) -> None:
        await self.browser.close()


class FirefoxContext:
    """A browser context: one Firefox process of its own (fresh profile)."""

    def __init__(self, browser: FirefoxProcess) -> None:
        self.browser = browser
        self.init_scripts: list[str] = []
        self.pages: list[FirefoxPage] = []

    async def add_init_script(self, script: str) -> None:
        self.init_scripts.append(script)

    async def new_page(self) -> FirefoxPage:
        page = FirefoxPage(self.browser, self.init_scripts)
        self.pages.append(page)
        return page

    async def close(self) -> None:
        await self.browser.close()


def secure_hosts(hosts: list[str]) -> dict[str, bool | int | str]:
    """Prefs that make plain-http `hosts` secure contexts (getUserMedia works there), as
    Chromium's --unsafely-treat-insecure-origin-as-secure does for the NAT lab's origins."""
    return {"dom.securecontext.allowlist": ",".join(hosts)}


class Firefox:
    """Stands in for a Playwright Browser: every new_context() is a Firefox of its own.

    `release()` keeps the browsers handed out so far for later contexts (storage cleared,
    blank page) instead of closing them: a module of tests starts a few Firefoxes, not one
    per page (a start is seconds of CPU)."""

    def __init__(
        self, ns: str | None = None, prefs: dict[str, bool | int | str] | None = None
    ) -> None:
        self.ns = ns
        self.prefs = prefs
        self.busy: list[FirefoxProcess] = []
        self.idle: list[FirefoxProcess] = []

    async def new_context(self, viewport: dict[str, int] | None = None) -> FirefoxContext:
        while self.idle:
            process = self.idle.pop()
            try:
                await process.reuse(viewport)
            except Exception:
                await process.close()
                continue
            self.busy.append(process)
            return FirefoxContext(process)
        process = FirefoxProcess(self.ns, viewport, self.prefs)
        self.busy.append(process)
        try:
            await process.start()
        except BaseException:
            await process.close()
            raise
        return FirefoxContext(process)

    async def screenshots(self, folder: Path, prefix: str = "firefox") -> list[Path]:
        """A picture of every page handed out (for a failed test); a dead browser is skipped."""
        paths: list[Path] = []
        for index, process in enumerate(self.busy):
            path = folder / f"{prefix}-{index}.png"

            def shoot(process: FirefoxProcess = process, path: Path = path) -> None:
                path.write_bytes(process.client.screenshot(format="binary", full=True))

            try:
                await process.call(shoot)
            except Exception:
                continue
            paths.append(path)
        return paths

    async def release(self) -> None:
        """The contexts handed out are done with: keep their browsers for new contexts."""
        busy, self.busy = self.busy, []
        for process in busy:
            if (
                process.client is not None
                and process.proc is not None
                and process.proc.poll() is None
            ):
                self.idle.append(process)
            else:
                await process.close()

    async def close(self) -> None:
        processes = self.busy + self.idle
        self.busy, self.idle = [], []
        results = await asyncio.gather(*(p.close() for p in processes), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result


@contextlib.asynccontextmanager
async def firefox(
    ns: str | None = None, prefs: dict[str, bool | int | str] | None = None
) -> AsyncIterator[Firefox]:
    """Firefox launcher for a test; every browser it started is closed at the end."""
    browser = Firefox(ns, prefs)
    try:
        yield browser
    finally:
        await browser.close()


def firefox_in(
    ns: str, prefs: dict[str, bool | int | str] | None = None
) -> contextlib.AbstractAsyncContextManager[Firefox]:
    """A Firefox launcher whose browsers (and driver connections) live in namespace `ns`."""
    return firefox(ns, prefs)
