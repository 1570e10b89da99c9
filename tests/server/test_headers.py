"""Security headers on every response of a real server: pages, API, webhooks, static files."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conveyor.server.headers import CONTENT_SECURITY_POLICY, DOCS_CONTENT_SECURITY_POLICY
from tests.helpers import ServerProcess, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("headers") / "data") as proc:
        yield proc


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/login", 200),
        ("GET", "/", 303),  # to the sign-in page
        ("GET", "/healthz", 200),
        ("GET", "/api/status", 401),  # no token
        ("GET", "/api/nothing-here", 404),
        ("GET", "/static/conveyor.css", 200),
        ("GET", "/static/charts.css", 200),
        ("GET", "/static/htmx-2.0.11.min.js", 200),
        ("POST", "/hooks/github/nope", 401),
        ("GET", "/openapi.json", 200),
    ],
)
def test_every_response_carries_the_security_headers(
    server: ServerProcess, method: str, path: str, status: int
) -> None:
    r = httpx.request(method, server.url + path, content=b"{}" if method == "POST" else None)
    assert r.status_code == status
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "same-origin"
    assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_an_authenticated_api_answer_and_a_refused_body_carry_them_too(
    server: ServerProcess,
) -> None:
    assert server.http.get("/api/status").headers["x-frame-options"] == "DENY"
    big = httpx.post(server.url + "/api/apps", content=b"x" * (26 * 1024 * 1024))
    assert big.status_code == 413 and big.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_api_docs_pages_may_load_their_cdn_code_and_nothing_else(
    server: ServerProcess, path: str
) -> None:
    r = httpx.get(server.url + path)
    assert r.status_code == 200
    assert r.headers["content-security-policy"] == DOCS_CONTENT_SECURITY_POLICY
    assert r.headers["x-frame-options"] == "DENY"
    # every outside address the page names is allowed by its policy, and no other
    outside = set(re.findall(r"https://([a-z.]+)/", r.text))
    allowed = set(re.findall(r"https://([a-z.]+)", DOCS_CONTENT_SECURITY_POLICY))
    assert outside and outside <= allowed, (outside, allowed)


def test_the_policy_allows_only_this_server_and_no_inline_script() -> None:
    directives = dict(d.split(" ", 1) for d in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe-eval" not in CONTENT_SECURITY_POLICY


def test_no_template_has_an_inline_script_or_stylesheet() -> None:
    # the policy's one inline allowance is style attributes: no <style> block, no inline
    # <script>, no onclick-like handler (the browser tests see what the policy refuses)
    templates = Path(__file__).resolve().parents[2] / "src/conveyor/server/web/templates"
    for template in templates.glob("*.html"):
        text = template.read_text()
        assert "<style" not in text, template.name
        assert not re.search(r"\son[a-z]+\s*=", text), template.name
        for script in re.findall(r"<script[^>]*>", text):
            assert 'src="/static/' in script, (template.name, script)
