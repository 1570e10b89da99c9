"""The few hottest requests, answered before FastAPI: `/healthz` and kept reads.

Under load, what a cached `GET /api/status` cost was FastAPI's, not ours: a dozen
middleware layers, routing among a hundred routes, dependency injection, each a turn
of the event loop's time for every reader. Here, in front of all that, on the loop:

- `GET /healthz`: its answer, made once (no middleware, no database, no thread);
- `GET` of a kept read (`CachedRead`: status and runs) whose query is in the simple
  form this module parses, by a caller whose token was verified lately
  (auth.verified_caller), while the answer kept for that query is fresh (recent.Recent):
  those bytes, with the headers the route would send (or its 304 for If-None-Match).

Anything else (no token, a token not verified lately, a stale answer that no read
underway will bring, another query form, an error) goes through FastAPI as before:
the answers, their headers and the OpenAPI schema are the same either way, only
cheaper when taken here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from starlette.types import Scope, Send

from conveyor import __version__
from conveyor.server.auth import role_at_least, verified_caller
from conveyor.server.headers import SECURITY_HEADERS
from conveyor.server.recent import Recent
from conveyor.store.outage import OUTAGE

# query values this module parses the way FastAPI would: anything else goes through it
APP_NAME = re.compile(r"[a-z0-9-]{1,100}")
LIMIT = re.compile(r"[1-9][0-9]{0,3}")
HEALTH = {"status": "ok", "version": __version__}


def health() -> dict[str, str]:
    """`/healthz`'s answer: HEALTH, or while the database is away, degraded and since when
    (store/outage.py; still 200: the process serves what it can without it)."""
    away = OUTAGE.health()
    return {**HEALTH, **away} if away else HEALTH


def app_name(value: str) -> bool:
    return APP_NAME.fullmatch(value) is not None


def at_most(most: int) -> Callable[[str], bool]:
    """A positive integer up to `most`, written plainly (no sign, no leading zero)."""
    return lambda value: LIMIT.fullmatch(value) is not None and int(value) <= most


def query(raw: bytes, known: dict[str, Callable[[str], bool]]) -> dict[str, str] | None:
    """A query string's parameters, if each is known, valid, plain and given once; else None.

    Plain: no percent-escape, no '+', nothing but `name=value` pairs joined by '&'.
    """
    if not raw:
        return {}
    found: dict[str, str] = {}
    for pair in raw.split(b"&"):
        name, equals, value = pair.partition(b"=")
        try:
            key, text = name.decode("ascii"), value.decode("ascii")
        except UnicodeDecodeError:
            return None
        check = known.get(key)
        if not equals or check is None or key in found or not check(text):
            return None
        found[key] = text
    return found


@dataclass(frozen=True)
class CachedRead:
    """A read-only route answered from `recent`: its path, the role it needs, its query
    parameters (name: validity) and the key of `recent` a request's parameters name."""

    path: str
    recent: Recent
    key: Callable[[dict[str, str]], str]
    params: dict[str, Callable[[str], bool]] = field(default_factory=dict)
    role: str = "viewer"


def json_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    """What a route's JSON answer carries: as Starlette's Response and SecurityHeaders."""
    return [
        (b"content-length", str(len(body)).encode()),
        (b"content-type", b"application/json"),
        *SECURITY_HEADERS,
    ]


class FastPath:
    """Answers `/healthz` and fresh kept reads; `answer` says whether it did."""

    def __init__(self, reads: Sequence[CachedRead]) -> None:
        self.reads = {read.path: read for read in reads}
        self.health = json.dumps(HEALTH, separators=(",", ":")).encode()
        self._health_headers = json_headers(self.health)
        self.answered = 0  # requests answered here (tests read it)

    async def answer(self, scope: Scope, send: Send) -> bool:
        """Answer the request if it can be here; False (nothing sent) when FastAPI must."""
        if scope["method"] != "GET":
            return False
        path = scope["path"]
        if path == "/healthz":
            if OUTAGE.down:
                body = json.dumps(health(), separators=(",", ":")).encode()
                await self._send(send, body, json_headers(body))
            else:
                await self._send(send, self.health, self._health_headers)
            return True
        read = self.reads.get(path)
        if read is None:
            return False
        params = query(scope.get("query_string", b""), read.params)
        if params is None:
            return False
        authorization = if_none_match = None
        for name, value in scope["headers"]:
            # the first of each, as Starlette's headers.get
            if name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
            elif name == b"if-none-match" and if_none_match is None:
                if_none_match = value.decode("latin-1")
        caller = verified_caller(authorization or "")
        if caller is None or not role_at_least(caller.role, read.role):
            return False
        answer = await read.recent.kept(read.key(params))
        if answer is None:
            return False
        if answer.unchanged_for(if_none_match):
            await self._send(send, b"", [*answer.headers(True), *SECURITY_HEADERS], 304)
        else:
            await self._send(send, answer.body, [*answer.headers(False), *SECURITY_HEADERS])
        return True

    async def _send(
        self, send: Send, body: bytes, headers: list[tuple[bytes, bytes]], status: int = 200
    ) -> None:
        self.answered += 1
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


__all__ = [
    "CachedRead",
    "FastPath",
    "app_name",
    "at_most",
    "health",
    "json_headers",
    "query",
]
