"""The answers the router gives itself on a plain shared port: 308 to HTTPS, ACME."""

from __future__ import annotations

import pytest

from conveyor.router.redirect import acme_answer, https_redirect


@pytest.mark.parametrize(
    ("host", "port", "url", "location"),
    [
        (b"shop.example.com", 443, b"/", b"https://shop.example.com/"),
        (b"shop.example.com:80", 443, b"/a?b=1", b"https://shop.example.com/a?b=1"),
        (b"shop.example.com:8080", 8443, b"/x", b"https://shop.example.com:8443/x"),
        (b"[::1]:8080", 443, b"/", b"https://[::1]/"),
    ],
)
def test_https_redirect(host: bytes, port: int, url: bytes, location: bytes) -> None:
    answer = https_redirect(host, port, url)
    assert answer.startswith(b"HTTP/1.1 308 ")
    assert b"\r\nLocation: " + location + b"\r\n" in answer
    head, body = answer.split(b"\r\n\r\n", 1)
    assert b"Content-Length: %d" % len(body) in head


def test_acme_answer() -> None:
    answers = {"tok": "tok.thumb"}
    status, answer = acme_answer(answers, b"/.well-known/acme-challenge/tok")
    assert status == 200 and answer.endswith(b"\r\n\r\ntok.thumb")
    assert acme_answer(answers, b"/.well-known/acme-challenge/other")[0] == 404
