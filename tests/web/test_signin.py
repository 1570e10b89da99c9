"""Sign-in: a token for an HttpOnly cookie, sign-out, CSRF, and pages that need no internet."""

from __future__ import annotations

from typing import Any

import httpx

from tests.helpers import ServerProcess
from tests.web.browser import Visitor, anonymous, make_token


def test_pages_redirect_to_sign_in_and_a_bad_token_is_refused(server: ServerProcess) -> None:
    with anonymous(server) as http:
        r = http.get("/?environment=production")
        assert r.status_code == 303
        assert r.headers["location"] == "/login?next=/%3Fenvironment%3Dproduction"
        r = http.post("/login", data={"token": "cvy_not_a_token", "next": "/"})
        assert r.status_code == 401
        assert "not valid" in r.text
        # the command to type is code, not Markdown's backticks
        assert "<code>conveyor token create NAME --role viewer</code>" in r.text
        assert "`" not in r.text.split("<main>")[1]
        assert "conveyor_session" not in r.headers.get("set-cookie", "")
        # the next page is this server's only: never an open redirect
        r = http.post("/login", data={"token": server.token, "next": "//evil.example/x"})
        assert r.status_code == 303 and r.headers["location"] == "/"


def test_sign_in_sign_out_and_csrf(server: ServerProcess, browser: Any) -> None:
    token = make_token(server, "ana", "viewer")
    visitor = Visitor(browser, server).sign_in(token)
    try:
        page = visitor.page
        assert page.locator("h1").inner_text() == "Apps"
        assert "ana" in page.locator(".who").inner_text()
        (cookie,) = [c for c in visitor.cookies() if c["name"] == "conveyor_session"]
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Strict"
        assert token not in cookie["value"]
        assert visitor.outside_requests() == []
        visitor.shoot("signin-apps-empty-desktop")

        # a form posted without the session's CSRF secret is refused and changes nothing
        with httpx.Client(base_url=server.url, cookies={"conveyor_session": cookie["value"]}) as h:
            r = h.post("/logout", data={"csrf": "wrong"})
            assert r.status_code == 403
            assert "CSRF" in r.json()["detail"]
            assert h.get("/", follow_redirects=False).status_code == 200

        page.click("text=Sign out")
        page.wait_for_url(server.url + "/login")
        assert [c for c in visitor.cookies() if c["name"] == "conveyor_session"] == []
        with httpx.Client(base_url=server.url, cookies={"conveyor_session": cookie["value"]}) as h:
            assert h.get("/", follow_redirects=False).status_code == 303  # the session is gone
        visitor.shoot("signin-login-desktop")
    finally:
        visitor.close()


def test_revoking_the_token_ends_its_sessions(server: ServerProcess, browser: Any) -> None:
    made = server.post("/api/tokens", {"name": "bo", "role": "deployer"})
    visitor = Visitor(browser, server, phone=True).sign_in(made["token"])
    try:
        visitor.shoot("signin-apps-empty-phone")
        assert server.http.delete(f"/api/tokens/{made['id']}").status_code < 300
        visitor.goto("/")
        assert visitor.page.url.startswith(server.url + "/login")
    finally:
        visitor.close()


def test_static_files_are_served_by_conveyor(server: ServerProcess) -> None:
    with anonymous(server) as http:
        for path in (
            "/static/htmx-2.0.11.min.js",
            "/static/htmx-ext-sse-2.2.4.js",
            "/static/conveyor.css",
        ):
            r = http.get(path)
            assert r.status_code == 200, path
            assert len(r.content) > 1000, path
