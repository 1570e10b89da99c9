"""The API's edge in-process: which bodies are not Unicode text, and the 500 of last resort."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from fastapi import FastAPI

from conveyor.server.edge import install, unicode_problem


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'{"repo": "plain"}', None),
        ('{"repo": "caf\u00e9 \u2603"}'.encode(), None),
        (b'{"repo": "\\u00e9"}', None),
        (b'{"repo": "\\ud83d\\ude00"}', None),  # a pair: one emoji
        (b'{"repo": "\\ud800"}', "lone UTF-16 surrogate"),
        (b'{"repo": "\\uDFFF x"}', "lone UTF-16 surrogate"),
        (b'{"\\udc00": 1}', "lone UTF-16 surrogate"),  # in a key
        (b'{"a": ["\\ude00\\ud83d"]}', "lone UTF-16 surrogate"),  # a pair the wrong way round
        (b'{"repo": "\\\\ud800"}', None),  # an escaped backslash, then text
        (b"not json \\ud800", None),  # not JSON: the route says so
        (b'{"repo": "\xff"}', "not valid UTF-8 (byte 10)"),
        (b"\xed\xa0\x80", "not valid UTF-8"),  # a surrogate encoded as UTF-8
    ],
)
def test_unicode_problem(body: bytes, problem: str | None) -> None:
    found = unicode_problem(body)
    assert (found is None) == (problem is None), found
    if problem is not None:
        assert found is not None and problem in found


def test_an_unexpected_error_is_a_logged_json_500(caplog: pytest.LogCaptureFixture) -> None:
    app = FastAPI()
    install(app)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("the bug")

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/boom")

    with caplog.at_level(logging.ERROR, logger="conveyor.server"):
        response = asyncio.run(call())
    assert response.status_code == 500
    assert "logged on the server" in response.json()["detail"]
    (record,) = [r for r in caplog.records if r.name == "conveyor.server"]
    assert record.exc_info is not None and "the bug" in str(record.exc_info[1])
    assert getattr(record, "path", None) == "/boom"
