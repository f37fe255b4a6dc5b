"""The admin page in Chromium (issue 17): on a phone-sized page an admin adds a room and
mints an invite; the invite opens in a second page, which joins; the admin removes the
room (the second page is told, and stays signed in), then revokes the invite (the second
page is signed out, and the link is refused when opened again).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Browser, Dialog

from tests.browser.pages import PHONE, Operator, until
from tests.servers import ServerProcess, mint

pytestmark = pytest.mark.browser


async def banner(op: Operator) -> str:
    text: str = await op.page.evaluate(
        "[...document.querySelectorAll('#banners .banner-text')].map((b) => b.textContent).join(' | ')"
    )
    return text


async def test_admin_page_room_invite_revoke(
    browser: Browser, voice_server: ServerProcess, artifacts: Path
) -> None:
    admin = await Operator.open(
        browser, voice_server, "W1ADM", viewport=PHONE, token=mint("W1ADM", role="admin", ttl=3600)
    )

    async def accept(dialog: Dialog) -> None:
        await dialog.accept()

    admin.page.on("dialog", accept)
    page = admin.page
    await page.click("#admin-open")
    await page.wait_for_selector("#view-admin:not([hidden]) #adm-live-rooms li[data-room='shack']")
    # Nothing wider than the phone's screen.
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], width

    # A room, added at runtime.
    await page.fill("#adm-room-id", "club-night")
    await page.fill("#adm-room-name", "Club night")
    await page.click("#adm-room-save")
    await page.wait_for_selector("#adm-rooms li[data-room='club-night']")

    # An invite for it; the link opens in a second page (its own context), which joins.
    await page.fill("#adm-inv-callsign", "g4abc")
    await page.select_option("#adm-inv-room", "club-night")
    await page.click("#adm-inv-mint")
    await page.wait_for_selector("#adm-minted:not([hidden])")
    link = await page.input_value("#adm-minted-link")
    assert "#token=" in link
    guest = await Operator.open(browser, voice_server, "G4ABC", token=link.split("#token=")[1])
    await guest.join("club-night")

    async def seen_live() -> bool:
        people = await page.text_content("#adm-live-rooms li[data-room='club-night'] .admin-people")
        return "G4ABC" in (people or "")

    await until(seen_live, "the guest in the live view")
    await admin.screenshot(artifacts, "admin-phone")

    # The room removed: the guest is told and is back in the lobby, still signed in.
    await page.click("#adm-rooms li[data-room='club-night'] .btn-danger")
    await guest.page.wait_for_selector("#view-lobby:not([hidden])")
    assert "closed this room" in await banner(guest)

    # The invite revoked: the guest's session ends (its lobby refresh is refused) ...
    await page.click("#adm-invites li[data-state='active'] .btn-danger")
    await page.wait_for_selector("#adm-invites li[data-state='revoked']")
    await guest.page.wait_for_selector("#view-login:not([hidden])", timeout=15_000)
    assert "revoked this invite" in await banner(guest)
    # ... and the link, opened again, is refused.
    await guest.page.goto(link)
    await guest.page.wait_for_selector("#view-login:not([hidden])")

    async def refused() -> bool:
        return "revoked this invite" in await banner(guest)

    await until(refused, "the reopened link refused")
    assert not admin.errors and not guest.errors, (admin.errors, guest.errors)
