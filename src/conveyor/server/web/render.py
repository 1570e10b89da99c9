"""Jinja2 templates of the dashboard, with the filters pages share."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from conveyor import __version__
from conveyor.server.web.scales import release_colour

HERE = Path(__file__).parent
STATIC = HERE / "static"

environment = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html", "svg"], default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
templates = Jinja2Templates(env=environment)


def duration(seconds: float | None) -> str:
    """1.2 s, 3 m 05 s, 2 h 10 m: short, for tables."""
    if seconds is None or math.isnan(seconds):
        return "—"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} m {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} m"
    return f"{hours // 24} d {hours % 24} h"


def when(value: datetime | None) -> str:
    """A stored (naive UTC) time as 2026-12-03 14:05:09 UTC."""
    if value is None:
        return "—"
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(value: datetime | None) -> str:
    """How long ago, from now: '12 s ago', '3 m ago'."""
    if value is None:
        return "—"
    now = datetime.now(UTC).replace(tzinfo=None)
    return duration(max(0.0, (now - value).total_seconds())) + " ago"


def percent(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f}%"


_CODE_SPAN = re.compile(r"`([^`\n]+)`")


def code_spans(text: object) -> Markup:
    """A message with Markdown's `code` spans as <code> (everything else escaped)."""
    escaped = str(escape(str(text)))
    return Markup(_CODE_SPAN.sub(r"<code>\1</code>", escaped))


def short_sha(sha: str | None) -> str:
    return (sha or "")[:7]


environment.filters.update(
    duration=duration,
    when=when,
    ago=ago,
    percent=percent,
    short_sha=short_sha,
    colour=release_colour,
    code_spans=code_spans,
)
environment.globals.update(version=__version__)


def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render a whole page (or a fragment: templates whose name starts with '_')."""
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def fragment(name: str, **context: Any) -> str:
    """Render a template to a string (for server-sent events and for tests)."""
    return environment.get_template(name).render(**context)


__all__ = ["STATIC", "ago", "duration", "environment", "fragment", "page", "percent", "when"]
