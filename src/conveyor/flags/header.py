"""Flags without an SDK: one request's flags as the `X-Conveyor-Flags` header value.

With `flags: {stickiness: "cookie:uid"}` (or `header:NAME`) in conveyor.yml, each
host's router (conveyor.router.service) reads who a request is for from that cookie or
header, evaluates every flag for them as the SDKs do, and adds the answers to the
request it relays. The flags' document reaches it in the host's desired state.
"""

from __future__ import annotations

from collections.abc import Iterable

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


def _cookie_value(cookie: bytes, key: bytes) -> bytes | None:
    """The value of cookie `key=` in a Cookie header, without parsing the rest."""
    start = 0
    while True:
        i = cookie.find(key, start)
        if i < 0:
            return None
        if i == 0 or cookie[i - 1] in b" ;":
            end = cookie.find(b";", i)
            value = cookie[i + len(key) : end if end >= 0 else len(cookie)].strip()
            return value.strip(b'"') or None
        start = i + 1


# users whose header line a router keeps (a dict of short bytes: a few MiB at most)
CACHED_USERS = 65_536


class RequestFlags:
    """A router's flags for one app: the header line to add to each proxied request.

    A user's line is kept until the flags change (a new RequestFlags): the answer depends
    on the user id alone, unless a constraint compares dates with the clock.
    """

    def __init__(self, stickiness: str, flags: FlagSet) -> None:
        kind, name = parse_source(stickiness)
        self.from_cookie = kind == "cookie"
        self.key = name.encode("latin-1") + b"=" if self.from_cookie else b""
        self.header = name.lower().encode("latin-1")
        self.flags = flags
        self.cacheable = not any(
            c.operator.startswith("DATE_")
            for f in flags.features.values()
            for s in f.strategies
            for c in s.constraints
        )
        self._lines: dict[str, bytes] = {}

    def user(self, headers: Iterable[tuple[bytes, bytes]], cookie: bytes | None) -> str | None:
        if self.from_cookie:
            found = None if cookie is None else _cookie_value(cookie, self.key)
        else:
            found = next((v.strip() for n, v in headers if n.lower() == self.header), None)
        return found.decode("latin-1") if found else None

    def _line(self, user: str | None) -> bytes:
        value = header_value(self.flags, Context(user_id=user))
        return f"{FLAGS_HEADER}: {value}\r\n".encode("latin-1", "replace")

    def line(self, headers: Iterable[tuple[bytes, bytes]], cookie: bytes | None) -> bytes:
        """`X-Conveyor-Flags: …\\r\\n` for a request with these headers."""
        user = self.user(headers, cookie)
        if user is None or not self.cacheable:
            return self._line(user)  # no user: the SDKs' random stickiness, never kept
        found = self._lines.get(user)
        if found is None:
            if len(self._lines) >= CACHED_USERS:
                self._lines.clear()
            found = self._lines[user] = self._line(user)
        return found
