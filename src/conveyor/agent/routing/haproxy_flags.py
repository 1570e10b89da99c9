"""Flags without an SDK on the HAProxy driver: the X-Conveyor-Flags header from Lua.

The agent compiles an app's flags (conveyor.flags.compiled) into one line, kept as key
`p` of the app's flags map and changed through the Runtime API like the other maps (no
reload). Each backend drops a client's own header, reads the line and, when there is
one, sets the header to the `conveyor_flags` sample fetch (conveyor_flags.lua, loaded
once per thread), which evaluates the flags for the request's user as the embedded
router does. Requests of apps without flags pay one map lookup and no Lua. The answers
are also the last field of the request's log line: the driver counts those of the flags
under a guarded rollout per answer (haproxy_counting), as the embedded router does.
"""

from __future__ import annotations

from pathlib import Path

from conveyor.agent.routing.spec import RouterError, RouteSpec
from conveyor.flags.compiled import Unsupported, compile_document, encode
from conveyor.flags.header import FLAGS_HEADER, parse_source

LUA = Path(__file__).with_name("conveyor_flags.lua")
KEY = "p"


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
    return [(KEY, line)] if line else []


def global_lines() -> list[str]:
    return [f"    lua-load-per-thread {LUA}"]


def backend_lines(maps: Path, app: str) -> list[str]:
    """The answers go to the header and, kept in txn.cvyans, to the request's log line
    (haproxy_config.LOG_FIELDS), where the driver counts those of guarded flags."""
    header = FLAGS_HEADER.lower()
    flagged = "if { var(txn.cvyflags) -m found }"
    return [
        f"    http-request del-header {header}",
        f"    http-request set-var(txn.cvyflags) str({KEY}),map({flags_map(maps, app)})",
        f"    http-request set-var(txn.cvyans) lua.conveyor_flags {flagged}",
        f"    http-request set-header {header} %[var(txn.cvyans)] {flagged}",
    ]
