"""Flags without an SDK: one request's flags as the `X-Conveyor-Flags` header value.

The pure half of router-evaluated flags (issue 17, point 3): who the request is for,
read from a cookie or a header the app names (`flags: {stickiness: "cookie:uid"}`),
and every flag's answer for them, evaluated as the SDKs do. The router's wiring (the
flags document in a host's desired state, the header on each proxied request) is not
built yet.
"""

from __future__ import annotations

from collections.abc import Iterable
from http.cookies import CookieError, SimpleCookie

from .context import Context
from .evaluate import FlagSet

FLAGS_HEADER = "X-Conveyor-Flags"
SOURCES = ("cookie", "header")


def parse_source(text: str) -> tuple[str, str]:
    """`cookie:NAME` or `header:NAME` as (kind, name); ValueError names what is wrong."""
    kind, _, name = text.partition(":")
    if kind not in SOURCES or not name.strip():
        raise ValueError(
            f"stickiness {text!r}: expected cookie:NAME or header:NAME, e.g. cookie:uid"
        )
    return kind, name.strip()


def _cookie(cookie_header: str, name: str) -> str | None:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookie_header)
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None and morsel.value else None


def request_context(
    source: str,
    headers: Iterable[tuple[str, str]],
    remote_address: str | None = None,
    environment: str | None = None,
    app_name: str | None = None,
) -> Context:
    """The context of one request: its user id from the cookie or header `source` names."""
    kind, name = parse_source(source)
    wanted = "cookie" if kind == "cookie" else name.lower()
    user_id = None
    for header, value in headers:
        if header.lower() != wanted:
            continue
        user_id = _cookie(value, name) if kind == "cookie" else (value.strip() or None)
        if user_id is not None:
            break
    return Context(
        user_id=user_id,
        remote_address=remote_address,
        environment=environment,
        app_name=app_name,
    )


def header_value(flags: FlagSet, context: Context) -> str:
    """`new-checkout=on; search=variant-b`: every flag, by name, on/off or its variant."""
    answers = []
    for name in sorted(flags.features):
        variant = flags.variant(name, context)
        if variant.enabled:
            answers.append(f"{name}={variant.name}")
        else:
            answers.append(f"{name}={'on' if variant.feature_enabled else 'off'}")
    return "; ".join(answers)
