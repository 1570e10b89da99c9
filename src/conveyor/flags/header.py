"""Flags without an SDK: one request's flags as the `X-Conveyor-Flags` header value.

With `flags: {stickiness: "cookie:uid"}` (or `header:NAME`) in conveyor.yml, each
host's router (conveyor.router.service) reads who a request is for from that cookie or
header, evaluates every flag for them as the SDKs do, and adds the answers to the
request it relays. The flags' document reaches it in the host's desired state.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Protocol

from .compiled import Unsupported, compile_document
from .context import Context
from .evaluate import FlagSet
from .fastline import FastLine

FLAGS_HEADER = "X-Conveyor-Flags"
_PREFIX = FLAGS_HEADER.encode() + b": "
SOURCES = ("cookie", "header")


def parse_source(text: str) -> tuple[str, str]:
    """`cookie:NAME` or `header:NAME` as (kind, name); ValueError names what is wrong."""
    kind, _, name = text.partition(":")
    if kind not in SOURCES or not name.strip():
        raise ValueError(
            f"stickiness {text!r}: expected cookie:NAME or header:NAME, e.g. cookie:uid"
        )
    return kind, name.strip()


def answers(flags: FlagSet, context: Context) -> list[str]:
    """`new-checkout=on`, `search=variant-b`: every flag by name, on/off or its variant."""
    out = []
    for name in sorted(flags.features):
        variant = flags.variant(name, context)
        if variant.enabled:
            out.append(f"{name}={variant.name}")
        else:
            out.append(f"{name}={'on' if variant.feature_enabled else 'off'}")
    return out


def header_value(flags: FlagSet, context: Context) -> str:
    """`new-checkout=on; search=variant-b`: every flag, by name, on/off or its variant."""
    return "; ".join(answers(flags, context))


class Observer(Protocol):
    """What counts a request's outcome (the router's counters of a flag's answer)."""

    def observe(self, status: int, latency: float) -> None: ...


NO_OBSERVERS: tuple[Observer, ...] = ()


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


# Cookie headers whose user's answers a router also keeps, as they are (a user's browser
# sends the same one request after request: no parsing), up to this long
CACHED_COOKIES = 16_384
COOKIE_KEY_MAX = 256
# users whose answers a router keeps (with 20 flags about 480 bytes a user: 32 MB at most),
# their ids up to this long
CACHED_USERS = 65_536
USER_KEY_MAX = 256


class RequestFlags:
    """A router's flags for one app: the header line to add to each proxied request.

    A user's line is kept until the flags change (a new RequestFlags): the answer depends
    on the user id alone, unless a constraint compares dates with the clock. With
    `guarded` flags (under a guarded rollout) and `counters` (the router's counters of
    one answer, `name=on`), each request also gets the counters its answers are counted in.
    """

    def __init__(
        self,
        stickiness: str,
        flags: FlagSet,
        guarded: Iterable[str] = (),
        counters: Callable[[str], Observer] | None = None,
        source: object = None,
    ) -> None:
        kind, name = parse_source(stickiness)
        self.from_cookie = kind == "cookie"
        self.key = name.encode("latin-1") + b"=" if self.from_cookie else b""
        self.header = name.lower().encode("latin-1")
        self.flags = flags
        self.source = source  # what it was made from (the router keeps it while unchanged)
        self.cacheable = not any(
            c.operator.startswith("DATE_")
            for f in flags.features.values()
            for s in f.strategies
            for c in s.constraints
        )
        self.guarded = frozenset(guarded) if counters is not None else frozenset()
        self._counters = counters
        # users' answers by their id as sent, the oldest dropped first once CACHED_USERS
        # are kept (an OrderedDict: dropping a plain dict's first key again and again
        # walks over the holes the earlier ones left)
        self._lines: OrderedDict[bytes, tuple[bytes, tuple[Observer, ...]]] = OrderedDict()
        self._cookies: OrderedDict[bytes, tuple[bytes, tuple[Observer, ...]]] = OrderedDict()
        try:  # the fast path: what a user id alone decides, precompiled (flags.compiled)
            self._fast: FastLine | None = FastLine(
                compile_document(flags.document), _PREFIX, b"\r\n", self.guarded
            )
        except Unsupported:
            self._fast = None
        # in C (flags/_line.c), each request is evaluated and nothing is kept
        self._native = None if self._fast is None else self._fast.native
        self._observers: dict[bytes, Observer] = {}  # of guarded flags' answers (name=on)

    def user(self, headers: Iterable[tuple[bytes, bytes]], cookie: bytes | None) -> str | None:
        found = self._raw_user(headers, cookie)
        return found.decode("latin-1") if found else None

    def _raw_user(
        self, headers: Iterable[tuple[bytes, bytes]], cookie: bytes | None
    ) -> bytes | None:
        if self.from_cookie:
            return None if cookie is None else _cookie_value(cookie, self.key)
        return next((v.strip() for n, v in headers if n.lower() == self.header), None) or None

    def _answer(self, user: str | None) -> tuple[bytes, tuple[Observer, ...]]:
        fast = self._fast
        if fast is not None and user:
            value = fast.line(user)
            line = _PREFIX + value + b"\r\n"
            if not self.guarded or self._counters is None:
                return line, NO_OBSERVERS
            found = value.decode().split("; ")
        else:
            found = answers(self.flags, Context(user_id=user))
            line = f"{FLAGS_HEADER}: {'; '.join(found)}\r\n".encode("latin-1", "replace")
            if not self.guarded or self._counters is None:
                return line, NO_OBSERVERS
        counted = self._counters
        return line, tuple(counted(a) for a in found if a.partition("=")[0] in self.guarded)

    def answer(
        self, headers: Iterable[tuple[bytes, bytes]], cookie: bytes | None
    ) -> tuple[bytes, tuple[Observer, ...]]:
        """`X-Conveyor-Flags: …\\r\\n` for a request with these headers, and the counters
        of its guarded flags' answers."""
        native = self._native
        if native is not None and self.guarded:  # in C, then each answer's counters
            raw = self._raw_user(headers, cookie)
            if raw is None:
                return self._answer(None)
            counted, answered = native.counted(raw)
            return counted, tuple(self._observer(a) for a in answered)
        if native is not None:  # in C, quicker than keeping answers: nothing is kept
            if self.from_cookie:
                found_line = None if cookie is None else native.cookie_header(cookie, self.key)
            else:
                raw = self._raw_user(headers, cookie)
                found_line = None if raw is None else native.header(raw)
            return self._answer(None) if found_line is None else (found_line, NO_OBSERVERS)
        if cookie is not None and self.from_cookie:
            found = self._cookies.get(cookie)
            if found is not None:
                return found  # this Cookie header seen: no parsing
        raw = self._raw_user(headers, cookie)
        if raw is None or not self.cacheable or len(raw) > USER_KEY_MAX:
            # no user (the SDKs' random stickiness), or an id longer than any real one:
            # answered, never kept (unique huge ids must not fill the router's memory)
            return self._answer(None if raw is None else raw.decode("latin-1"))
        lines = self._lines
        found = lines.get(raw)
        if found is None:
            if len(lines) >= CACHED_USERS:
                lines.popitem(last=False)
            found = lines[raw] = self._answer(raw.decode("latin-1"))
        elif cookie is not None and self.from_cookie and len(cookie) <= COOKIE_KEY_MAX:
            # a user seen before: their Cookie header too (one seen once never is)
            cookies = self._cookies
            if len(cookies) >= CACHED_COOKIES:
                cookies.popitem(last=False)
            cookies[cookie] = found
        return found

    def _observer(self, answer: bytes) -> Observer:
        """The counters of one answer of a guarded flag (`new-checkout=on`)."""
        found = self._observers.get(answer)
        if found is None:
            assert self._counters is not None
            found = self._observers[answer] = self._counters(answer.decode("latin-1"))
        return found

    def added_to(
        self, head: bytes, headers: Iterable[tuple[bytes, bytes]], cookie: bytes | None
    ) -> tuple[bytes, tuple[Observer, ...]]:
        """A request's head (ending in its blank line) with `X-Conveyor-Flags: …` as its
        last header, and the counters of its guarded flags' answers."""
        native = self._native
        if native is not None and not self.guarded and self.from_cookie and cookie is not None:
            added = native.cookie_header(cookie, self.key, head)  # one copy, in C
            if added is not None:
                return added, NO_OBSERVERS
        line, observers = self.answer(headers, cookie)
        return head[:-2] + line + b"\r\n", observers

    def line(self, headers: Iterable[tuple[bytes, bytes]], cookie: bytes | None) -> bytes:
        """`X-Conveyor-Flags: …\\r\\n` for a request with these headers."""
        return self.answer(headers, cookie)[0]
