"""The access log's lines are uvicorn's, as logs.JsonFormatter wrote them, written in batches."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest

from conveyor.logs import JsonFormatter
from conveyor.server.accesslog import AccessLog, line

SCOPE = {
    "type": "http",
    "client": ("127.0.0.1", 40312),
    "method": "GET",
    "path": "/api/runs/ä x",
    "query_string": b"app=shop&limit=5",
    "http_version": "1.1",
}


@pytest.mark.parametrize(
    ("scope", "who", "target"),
    [
        (SCOPE, "127.0.0.1:40312", "/api/runs/%C3%A4%20x?app=shop&limit=5"),
        ({**SCOPE, "client": None, "query_string": b"", "path": '/a"b'}, "", "/a%22b"),
    ],
)
def test_a_line_is_what_uvicorn_logged_through_the_json_formatter(
    scope: dict[str, object], who: str, target: str
) -> None:
    # uvicorn's call: access_logger.info('%s - "%s %s HTTP/%s" %d', client, method, ...)
    args = (who, "GET", target, "1.1", 200)
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, None
    )
    assert line(scope, 200, record.created) == JsonFormatter().format(record) + "\n"


def test_lines_are_written_together_then_flushed() -> None:
    out = io.StringIO()
    log = AccessLog(out, every=0.05)

    async def main() -> None:
        for status in (200, 304, 401):
            log.add(SCOPE, status)
        assert out.getvalue() == ""  # not yet: one write for the batch
        for _ in range(100):
            await asyncio.sleep(0.02)
            if out.getvalue():
                break
        log.add(SCOPE, 503)
        log.flush()  # at shutdown: at once

    asyncio.run(main())
    statuses = [json.loads(x)["msg"].rsplit(" ", 1)[1] for x in out.getvalue().splitlines()]
    assert statuses == ["200", "304", "401", "503"]
