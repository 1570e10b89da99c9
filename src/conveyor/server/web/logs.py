"""A step's log on a page: the last page of it, earlier pages on request, then what is new.

Positions are byte offsets in the log file the API serves (`GET /api/steps/{id}/log`),
which holds the output already masked. Every piece shown starts and ends on a line
boundary while the step writes, so its ANSI colours render line by line and a line is
never shown in two halves; only a line longer than a whole read is cut, and then on a
UTF-8 character boundary.
"""

from __future__ import annotations

import os

from fastapi import Request

from conveyor.server.api.runs import log_file, read_log
from conveyor.server.web.ansi import to_html
from conveyor.store.models import Step

PAGE = 64 * 1024  # what a page shows of a log at first, and what "show earlier" adds
LIVE_MAX = 256 * 1024  # the most of one step's log sent to a page in one beat


def char_start(data: bytes, at: int = 0) -> int:
    """The first offset at or after `at` that does not fall inside a UTF-8 character."""
    while at < len(data) and (data[at] & 0xC0) == 0x80:
        at += 1
    return at


def char_end(data: bytes) -> int:
    """A length of `data` that ends before any multi-byte character at its end (which
    may be cut short; if it is whole it comes with the next read)."""
    cut = len(data)
    while cut > 0 and (data[cut - 1] & 0xC0) == 0x80:
        cut -= 1
    if cut > 0 and data[cut - 1] >= 0xC0:
        cut -= 1
    return cut


def line_start(data: bytes) -> int:
    """Where the first whole line of `data` starts (data read from the middle of a log)."""
    newline = data.find(b"\n")
    return newline + 1 if newline >= 0 else char_start(data)


def shown_end(data: bytes, *, whole: bool, limit: int = LIVE_MAX) -> int:
    """How much of `data` to show now.

    `whole`: data runs to the end of a finished step's log, so all of it. Otherwise whole
    lines only (the step may be writing the rest of the last one), unless a read of
    `limit` bytes held no line end at all: then that much, so a page never stalls.
    """
    if whole:
        return len(data)
    newline = data.rfind(b"\n")
    if newline >= 0:
        return newline + 1
    return char_end(data) if len(data) >= limit else 0


def size(request: Request, step: Step) -> int:
    path = log_file(request, step)
    try:
        return os.path.getsize(path) if path is not None else 0
    except FileNotFoundError:
        return 0


def finished(step: Step) -> bool:
    return step.state not in ("pending", "running")


def tail(request: Request, step: Step) -> tuple[int, int, str]:
    """The last page of a log as (start, end, html): what a page shows first."""
    # the state first, then the file: a step that was finished is finished writing
    whole = finished(step)
    total = size(request, step)
    low = max(0, total - PAGE)
    data = read_log(request, step, low, total - low)
    end = shown_end(data, whole=whole)
    start = 0 if low == 0 else line_start(data[:end])
    return low + start, low + end, to_html(_text(data[start:end]))


def since(request: Request, step: Step, offset: int) -> tuple[int, str]:
    """What a log holds past `offset`, as (new offset, html); "" when nothing is new."""
    whole = finished(step)
    data = read_log(request, step, offset, LIVE_MAX)
    end = shown_end(data, whole=whole and len(data) < LIVE_MAX)
    return offset + end, to_html(_text(data[:end])) if end else ""


def earlier(request: Request, step: Step, before: int) -> tuple[int, str]:
    """The page of a log that ends at `before`, as (its start, html)."""
    before = max(0, min(before, size(request, step)))
    low = max(0, before - PAGE)
    data = read_log(request, step, low, before - low)
    start = 0 if low == 0 else line_start(data)
    return low + start, to_html(_text(data[start:]))


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


# -- cursors: where a page stands in each log, as an SSE event id --------------------


def format_cursor(offsets: dict[int, int]) -> str:
    """`41:1200,42:0`: each step the page shows, and how much of its log it has."""
    return ",".join(f"{step}:{offset}" for step, offset in offsets.items())


def parse_cursor(text: str) -> dict[int, int]:
    """The offsets of a cursor; a malformed part is left out (that step is sent anew)."""
    offsets: dict[int, int] = {}
    for part in text.split(","):
        step, sep, offset = part.strip().partition(":")
        if sep and step.isdigit() and offset.isdigit():
            offsets[int(step)] = int(offset)
    return offsets


__all__ = [
    "LIVE_MAX",
    "PAGE",
    "earlier",
    "format_cursor",
    "line_start",
    "parse_cursor",
    "shown_end",
    "since",
    "tail",
]
