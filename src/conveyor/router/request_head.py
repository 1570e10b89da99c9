"""A client's request head as relayed to a target: a pure rewrite, one pass over the headers.

Hop-by-hop headers go, X-Forwarded-* are added, and what the proxy needs to route and frame
the request (body framing, sticky cookie, preview header) is read on the way.
"""

from __future__ import annotations

from typing import NamedTuple

from conveyor.routespec import PREVIEW_HEADER

# Request headers the proxy looks at; the rest are relayed untouched.
_HOST, _XFF, _XFP, _XFH, _COOKIE, _LENGTH, _TE, _CONNECTION, _UPGRADE, _HOP, _PREVIEW = range(11)
_SPECIAL = {
    b"host": _HOST,
    b"x-forwarded-for": _XFF,
    b"x-forwarded-proto": _XFP,
    b"x-forwarded-host": _XFH,
    b"cookie": _COOKIE,
    b"content-length": _LENGTH,
    b"transfer-encoding": _TE,
    b"connection": _CONNECTION,
    b"upgrade": _UPGRADE,
    b"keep-alive": _HOP,
    b"proxy-connection": _HOP,
    b"te": _HOP,
    b"trailer": _HOP,
    PREVIEW_HEADER.lower().encode(): _PREVIEW,
    # the router's own answer (conveyor.flags.header): a client never sets it for the app
    b"x-conveyor-flags": _HOP,
}
_CONNECTION_TOKENS = frozenset({b"close", b"keep-alive", b"upgrade", b""})


_PLAIN = -1
# Header names as clients spell them -> their kind; grows with the spellings seen.
_KINDS: dict[bytes, int] = {}


def _kind(name: bytes) -> int:
    kind = _SPECIAL.get(name.lower(), _PLAIN)
    if len(_KINDS) < 4096:
        _KINDS[name] = kind
    return kind


def _drop_listed(head: bytes, listed: list[bytes]) -> bytes:
    """Drop the headers that the client's Connection header names as hop-by-hop."""
    lines = head.split(b"\r\n")
    kept = [
        line for line in lines[1:] if line and line.split(b":", 1)[0].strip().lower() not in listed
    ]
    return b"\r\n".join([lines[0], *kept]) + b"\r\n\r\n"


class RequestHead(NamedTuple):
    """The rewritten head and what was read from the client's headers."""

    head: bytes
    chunked: bool
    has_body: bool
    # whether the client sent a Connection header (then its HTTP version matters)
    connection: bool
    cookie: bytes | None
    preview: bytes | None


def rewrite_request_head(
    method: bytes,
    url: bytes,
    headers: list[tuple[bytes, bytes]],
    peer: bytes,
    upgrade: bool,
    proto: bytes = b"http",
) -> RequestHead:
    """The head to send to a target for one client request (always HTTP/1.1).

    Complexity stays here on purpose: this runs once per request on the proxy's hot path,
    and one pass with a branch per kind of header is the fastest in CPython; a call per
    header, or a dispatch table of functions, measurably slows the router down.
    """
    parts = [method, b" ", url, b" HTTP/1.1\r\n"]
    host = xff = cookie = upgrade_to = preview = None
    xfp = xfh = chunked = has_body = connection = False
    listed: list[bytes] | None = None
    kinds = _KINDS
    for name, value in headers:
        kind = kinds.get(name)
        if kind is None:
            kind = _kind(name)
        if kind == _PLAIN:
            parts += (name, b": ", value, b"\r\n")
            continue
        if kind == _HOP:
            continue
        if kind == _HOST:
            host = value
        elif kind == _LENGTH:
            has_body = value.strip() != b"0"
        elif kind == _TE:
            chunked = has_body = True
            continue
        elif kind == _CONNECTION:
            connection = True
            for token in value.lower().split(b","):
                token = token.strip()
                if token not in _CONNECTION_TOKENS:
                    listed = listed or []
                    listed.append(token)
            continue
        elif kind == _UPGRADE:
            upgrade_to = value
            continue
        elif kind == _XFF:
            xff = value
            continue
        elif kind == _XFP:
            xfp = True
        elif kind == _XFH:
            xfh = True
        elif kind == _COOKIE:
            cookie = value
        elif kind == _PREVIEW:
            preview = value  # the last one counts, as with HAProxy's req.fhdr
        parts += (name, b": ", value, b"\r\n")
    if xff:
        parts += (b"X-Forwarded-For: ", xff, b", ", peer, b"\r\n")
    else:
        parts += (b"X-Forwarded-For: ", peer, b"\r\n")
    if not xfp:
        parts += (b"X-Forwarded-Proto: ", proto, b"\r\n")
    if host is None:
        parts.append(b"Host: localhost\r\n")
    elif not xfh:
        parts += (b"X-Forwarded-Host: ", host, b"\r\n")
    if chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    if upgrade and upgrade_to is not None:
        parts += (b"Connection: Upgrade\r\nUpgrade: ", upgrade_to, b"\r\n")
    parts.append(b"\r\n")
    head = b"".join(parts)
    if listed:
        head = _drop_listed(head, listed)
    return RequestHead(head, chunked, has_body, connection, cookie, preview)
