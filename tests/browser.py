"""Headless Chromium (Debian's package) for the tests that open pages: console errors and
every request that leaves the machine are recorded."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from urllib.parse import urlparse

import pytest

CHROMIUM = os.environ.get("ARTSENTRY_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
LOCAL_SCHEMES = {"data", "file", "blob", "about"}
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


def require_chromium() -> str:
    if not CHROMIUM:
        pytest.fail("headless Chromium is needed (Debian package 'chromium'; `make test` installs it)")
    return CHROMIUM


def is_local(url: str) -> bool:
    u = urlparse(url)
    return u.scheme in LOCAL_SCHEMES or (u.scheme in ("http", "https", "ws") and u.hostname in LOCAL_HOSTS)


class PageLog:
    def __init__(self):
        self.console_errors: list[str] = []
        self.outside: list[str] = []
        self.requests: list[str] = []


@contextmanager
def browser_page(width: int = 1200, height: int = 900):
    """(page, log): a fresh page; requests leaving 127.0.0.1 are blocked and logged."""
    from playwright.sync_api import sync_playwright

    exe = require_chromium()
    log = PageLog()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda m: log.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: log.console_errors.append(str(e)))

            def route(r):
                log.requests.append(r.request.url)
                if is_local(r.request.url):
                    r.continue_()
                else:
                    log.outside.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            yield page, log
        finally:
            browser.close()
