"""Browser tests' one way to a browser: Debian's chromium driven by Playwright.

Every browser test launches chromium through :func:`chromium`, so the flags
live here only: headless, no sandbox (tests run as root), nothing that
reaches out (QUIC, background networking, component updates, sync), a fresh
empty profile per launch. The binary is Debian's ``chromium`` package
(``bin/setup-browser`` installs it and Playwright); Playwright's own browser
downloads are never used. Tests that need it are marked
:data:`requires_browser` and skip, saying why, when it is missing.

The pages come from a real daphne (``tests.live``), which serves no static
files (production leaves that to a web server or CDN): :func:`serve_static`
answers the browser's requests under ``STATIC_URL`` from Django's static file
finders instead, as ``collectstatic`` output would be served.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import pytest

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page

__all__ = [
    "CHROMIUM",
    "CHROMIUM_FLAGS",
    "BROWSER_MISSING",
    "requires_browser",
    "chromium",
    "serve_static",
    "admin_login",
    "watch_for_text",
    "seen_at",
]

#: Debian's chromium (the ``chromium`` package); CHROMIUM=/path overrides it.
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def _browser_missing() -> str:
    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed: run bin/setup-browser (pip install playwright)"
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no chromium at {CHROMIUM}: run bin/setup-browser (apt-get install chromium) or set CHROMIUM"
    return ""


#: Why browser tests cannot run here ("" when they can).
BROWSER_MISSING = _browser_missing()

#: Marks a test (or, as ``pytestmark``, a module) that drives chromium.
requires_browser = pytest.mark.skipif(bool(BROWSER_MISSING), reason=BROWSER_MISSING or "chromium available")


@asynccontextmanager
async def chromium(extra_args: Sequence[str] = ()) -> AsyncIterator[BrowserContext]:
    """A chromium browser context with a new, empty profile, closed (and the profile removed) after the block.

    ``extra_args`` are more chromium flags, e.g. ``--use-fake-device-for-media-stream``
    and ``--use-file-for-fake-audio-capture=/path/to.wav`` for a fake microphone.
    """
    from playwright.async_api import async_playwright

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        async with async_playwright() as playwright:
            # Playwright passes the profile as --user-data-dir (it refuses that flag in args).
            context = await playwright.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=[*CHROMIUM_FLAGS, *extra_args],
                timeout=30_000,
            )
            try:
                yield context
            finally:
                await context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


async def serve_static(context: BrowserContext) -> None:
    """Answer requests under ``STATIC_URL`` from Django's static file finders (404 for unknown files)."""
    from django.conf import settings
    from django.contrib.staticfiles import finders

    prefix = "/" + settings.STATIC_URL.lstrip("/")

    async def handle(route) -> None:
        relative = unquote(urlsplit(route.request.url).path[len(prefix):])
        found = finders.find(relative) if relative and ".." not in relative.split("/") else None
        if not found:
            await route.fulfill(status=404, body="not found")
            return
        await route.fulfill(path=found)

    await context.route(lambda url: urlsplit(url).path.startswith(prefix), handle)


async def admin_login(page: Page, origin: str, username: str, password: str) -> None:
    """Log in through the admin's own login form."""
    await page.goto(f"{origin}/admin/login/")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url(f"{origin}/admin/")


_WATCH = """([key, selector, text]) => {
  window.__seenAt = window.__seenAt || {};
  window.__seenAt[key] = new Promise((resolve) => {
    const now = () => performance.timeOrigin + performance.now();
    const check = () => {
      for (const node of document.querySelectorAll(selector)) {
        if (node.textContent.includes(text)) { resolve(now()); return true; }
      }
      return false;
    };
    if (check()) return;
    const observer = new MutationObserver(() => { if (check()) observer.disconnect(); });
    observer.observe(document.body, {subtree: true, childList: true, characterData: true});
  });
}"""


async def watch_for_text(page: Page, key: str, selector: str, text: str) -> None:
    """Start watching for ``text`` in an element matching ``selector``; :func:`seen_at` gives when it showed."""
    await page.evaluate(_WATCH, [key, selector, text])


async def seen_at(page: Page, key: str, timeout: float = 10.0) -> float:
    """When (epoch seconds, the browser's clock) the watched text appeared in the DOM."""
    import asyncio

    value = await asyncio.wait_for(page.evaluate("(key) => window.__seenAt[key]", key), timeout)
    return value / 1000
