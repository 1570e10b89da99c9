"""A real Chromium (Debian's) driven by Playwright, signed in to a real server.

Screenshots go to `artifacts/screenshots/` at the repository's root (or to
$CONVEYOR_ARTIFACTS/screenshots): one desktop and one 390-pixel phone picture per
page, named after the test, so a person can look at what the dashboard shows.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("CONVEYOR_ARTIFACTS", ROOT / "artifacts")) / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

# Debian's /usr/bin/chromium is a shell wrapper; the binary itself starts quicker and quieter
CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium_path() -> str | None:
    for candidate in CANDIDATES:
        if Path(candidate).exists():
            return candidate
    found = shutil.which("chromium")
    return found


def make_token(server: ServerProcess, name: str, role: str) -> str:
    r = server.http.post("/api/tokens", json={"name": name, "role": role})
    assert r.status_code < 300, r.text
    token: str = r.json()["token"]
    return token


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium; the test is skipped, saying why, where none is installed."""
    path = chromium_path()
    if path is None:
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=path, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield browser
        finally:
            browser.close()


class Visitor:
    """One browser context (its own cookies) at one viewport, signed in with a token."""

    def __init__(self, browser: Any, server: ServerProcess, *, phone: bool = False) -> None:
        self.server = server
        self.context = browser.new_context(
            viewport=PHONE if phone else DESKTOP,
            device_scale_factor=1,
            is_mobile=phone,
            has_touch=phone,
        )
        self.context.set_default_timeout(15_000)
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.page.on("request", lambda req: self.requests.append(req.url))
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        # what the Content-Security-Policy refused (an inline script or style, say) is an error
        self.page.on("console", self._console)

    def _console(self, message: Any) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.errors.append(message.text)

    def sign_in(self, token: str) -> Visitor:
        self.page.goto(self.server.url + "/login")
        self.page.fill("#token", token)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(self.server.url + "/")
        return self

    def goto(self, path: str) -> Any:
        return self.page.goto(self.server.url + path)

    def shoot(self, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def outside_requests(self) -> list[str]:
        """Requests the page made anywhere but this server: none are allowed."""
        return [u for u in self.requests if not u.startswith(self.server.url)]

    def cookies(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.context.cookies()
        return found

    def close(self) -> None:
        self.context.close()


def anonymous(server: ServerProcess) -> httpx.Client:
    """An HTTP client with no token and no cookie."""
    return httpx.Client(base_url=server.url, timeout=30, follow_redirects=False)
