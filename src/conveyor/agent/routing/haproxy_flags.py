"""Flags without an SDK on the HAProxy driver: the X-Conveyor-Flags header from Lua.

The agent compiles an app's flags (conveyor.flags.compiled) into one line, kept as key
`p` of the app's flags map under its version (key `v`, a digest of the line, which also
leads the line), changed through the Runtime API like the other maps (no reload). Each
backend drops a client's own header and reads the version. A request naming its user
(the cookie or header of `stickiness`) is answered by the `conveyor_flags_of` Lua
converter from `USER@VERSION`; the others, and the first request of a version on each
thread, by the `conveyor_flags` sample fetch, which reads the line (conveyor_flags.lua,
loaded once per thread). Both evaluate the flags for the user as the embedded router
does and keep each user's answers until the flags change. A converter is given a string
and calls nothing back into HAProxy: each call of the fetch into HAProxy (a variable, a
cookie) cost about as much as evaluating the flags for a user kept. Requests of apps
without flags pay one map lookup and no Lua. The answers are also the last field of the
request's log line: the driver counts those of the flags under a guarded rollout per
answer (haproxy_counting), as the embedded router does.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import unquote

from conveyor.agent.routing.spec import RouterError, RouteSpec
from conveyor.flags.compiled import Unsupported, compile_document, encode
from conveyor.flags.header import FLAGS_HEADER, parse_source

LUA = Path(__file__).with_name("conveyor_flags.lua")
KEY, VERSION = "p", "v"


def flags_map(maps: Path, app: str) -> Path:
    return maps / f"{app}.flags"


def program(spec: RouteSpec) -> str:
    """The app's flags as the Lua action reads them ("" without flags); RouterError
    names a flag HAProxy cannot evaluate."""
    if spec.flags is None:
        return ""
    try:
        kind, name = parse_source(spec.flags.stickiness)
        return encode(kind, name, compile_document(spec.flags.document))
    except (Unsupported, ValueError) as exc:
        raise RouterError(f"app {spec.app}: {exc}") from exc


def entries(line: str) -> list[tuple[str, str]]:
    """The map's entries for a program line: the line, led by its version, and the
    version alone (a request may read the two across a change: the fetch keys what it
    parses by the version the line carries)."""
    if not line:
        return []
    version = hashlib.sha256(line.encode()).hexdigest()[:16]
    return [(KEY, f"{version}!{line}"), (VERSION, version)]


def global_lines() -> list[str]:
    return [f"    lua-load-per-thread {LUA}"]


# a cookie or header name HAProxy's configuration may name as it is (else: the fetch)
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")


def user_fetch(line: str) -> str | None:
    """The sample fetch of the request's user id for a program line (`req.cook(uid)`),
    None without a line or when its name is not plain enough to write in the config."""
    kind, _, name = line.partition("!")[0].partition("|")
    name = unquote(name)
    if not line or not _PLAIN_NAME.fullmatch(name):
        return None
    return f"req.cook({name})" if kind == "cookie" else f"req.fhdr({name})"


def backend_lines(maps: Path, app: str, line: str = "") -> list[str]:
    """The answers go to the header and, kept in txn.cvyans, to the request's log line
    (haproxy_config.LOG_FIELDS), where the driver counts those of guarded flags.

    A request naming its user gets its answers from the `conveyor_flags_of` converter,
    given `USER@VERSION` built natively (a Lua converter is called with a string and
    calls nothing back: a third of the fetch's cost); the fetch answers the others (no
    user, or a version the thread has not parsed yet). The user's fetch is written in
    the configuration: a new stickiness reloads HAProxy, new flags do not."""
    header = FLAGS_HEADER.lower()
    flagged = "{ var(txn.cvyflags) -m found }"
    path = flags_map(maps, app)
    lines = [
        f"    http-request del-header {header}",
        f"    http-request set-var(txn.cvyflags) str({VERSION}),map({path})",
    ]
    unanswered = flagged
    fetch = user_fetch(line)
    if fetch is not None:
        lines.append(
            f"    http-request set-var(txn.cvyans) {fetch},concat(@,txn.cvyflags),"
            f"lua.conveyor_flags_of if {flagged}"
        )
        unanswered = f"{flagged} !{{ var(txn.cvyans),length gt 0 }}"
    return [
        *lines,
        f"    http-request set-var(txn.cvyprog) str({KEY}),map({path}) if {unanswered}",
        f"    http-request set-var(txn.cvyans) lua.conveyor_flags if {unanswered}",
        f"    http-request set-header {header} %[var(txn.cvyans)] if {flagged}",
    ]
