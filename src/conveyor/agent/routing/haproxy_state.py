"""What the HAProxy driver remembers between agent restarts, and the pure decisions on it.

HAProxy knows servers, not releases. The driver gives every app a fixed set of
server slots (`s1..sN`) and records which release, address and weight each slot
carries; `plan_slots` decides that mapping for a new `RouteSpec`, and `credit`
turns HAProxy's per-slot connection-failure counters (which restart at zero in
every new worker) into per-release counters that only grow while the HAProxy
master lives.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from conveyor.agent.routing.spec import LATENCY_BUCKETS, ReleaseCounters, RouterError, Target
from conveyor.protocol import LEGACY_LATENCY_BUCKETS, from_legacy

STATE_VERSION = 1
APP_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# Release ids travel in a cookie, a map file and a log line: keep them to a safe alphabet.
RELEASE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# Old releases whose counters are kept per app, beyond those a slot still carries.
KEEP_RETIRED = 32

SlotState = Literal["free", "ready", "drain", "maint"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Slot(_Model):
    """One HAProxy server line of an app's backend.

    free: never carried a release; ready: in load balancing with `weight`;
    drain: no new request, in-flight ones finish (until `drain_until`);
    maint: out of service, still remembered as `release` until reused.
    """

    name: str
    state: SlotState = "free"
    release: str | None = None
    host: str = "127.0.0.1"
    port: int = 1
    weight: int = 0
    drain_until: float | None = None


class AppState(_Model):
    app: str
    bind: str
    port: int
    sticky: bool = False
    drain_timeout: float = 30.0
    slots: list[Slot]
    # served on the shared frontend of (bind, port) by these names (none: its own frontend)
    domains: list[str] = []
    path_prefix: str = ""
    strip_prefix: bool = False
    # also served over HTTPS on the shared (bind, tls_port), with certs/<tls_cert>
    tls_port: int | None = None
    tls_cert: str = ""
    redirect_http: bool = True
    flags: str = ""  # the compiled flags the Lua action reads (agent.routing.haproxy_flags)
    guarded: list[str] = []  # flags under a guarded rollout: their answers are counted

    def slot(self, name: str) -> Slot | None:
        return next((s for s in self.slots if s.name == name), None)


class Totals(_Model):
    """Counters of one release since the current HAProxy master started.

    requests, errors_5xx and the latency histogram come from HAProxy's request logs,
    so that the histogram's implied total (+Inf) is exactly `requests`; connection
    failures come from the stats (failed attempts leave no log line of their own)."""

    requests: int = 0
    errors_5xx: int = 0
    connect_failures: int = 0
    # Requests per latency bucket, not cumulative (cheaper per request); the last one
    # counts those above the largest bound.
    latency_counts: list[int] = Field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0

    @field_validator("latency_counts")
    @classmethod
    def _layout(cls, value: list[int]) -> list[int]:
        """Counts saved by a driver before the finer buckets (issue 13) are moved onto
        them: each legacy bucket's count to the fine bucket of the same upper bound."""
        if len(value) == len(LEGACY_LATENCY_BUCKETS) + 1:
            cumulative, total = [], 0
            for count in value[:-1]:
                total += count
                cumulative.append(total)
            fine = from_legacy(cumulative)
            value = [b - a for a, b in itertools.pairwise([0, *fine])] + [value[-1]]
        if len(value) != len(LATENCY_BUCKETS) + 1:
            raise ValueError(f"expected {len(LATENCY_BUCKETS) + 1} latency counts")
        return value

    def cumulative(self) -> list[int]:
        """Requests with latency <= each LATENCY_BUCKETS bound, as ReleaseCounters has them."""
        out, total = [], 0
        for count in self.latency_counts[: len(LATENCY_BUCKETS)]:
            total += count
            out.append(total)
        return out


class RouterState(_Model):
    version: int = STATE_VERSION
    master_pid: int | None = None
    started_at: float = 0.0
    # Where HAProxy sends request logs, and the secret that marks them as HAProxy's.
    log_port: int = 0
    log_token: str = Field(default_factory=lambda: secrets.token_hex(16))
    apps: dict[str, AppState] = {}
    # the plain shared port (bind, port) where ACME HTTP-01 answers are served
    acme: tuple[str, int] | None = None
    # Connection failures last read per worker pid -> app -> slot.
    seen: dict[str, dict[str, dict[str, int]]] = {}
    # app -> release -> totals since `started_at`.
    totals: dict[str, dict[str, Totals]] = {}
    # app -> a guarded flag's answer ("new-checkout=on") -> totals since `started_at`
    flag_totals: dict[str, dict[str, Totals]] = {}

    def reset_counters(self, master_pid: int | None, started_at: float) -> None:
        """A new HAProxy master: its workers count from zero, so do we."""
        self.master_pid = master_pid
        self.started_at = started_at
        self.seen = {}
        self.totals = {}
        self.flag_totals = {}


def load_state(path: Path) -> RouterState:
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return RouterState()
    try:
        state = RouterState.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise RouterError(
            f"{path}: unreadable HAProxy driver state ({exc.__class__.__name__}); "
            "move it away to start from an empty router"
        ) from exc
    return state


def save_state(path: Path, state: RouterState, *, durable: bool = False) -> None:
    """Write atomically: a crash leaves the old or the new file, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the log token
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(state.model_dump_json())
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)


def new_slots(count: int) -> list[Slot]:
    return [Slot(name=f"s{i}") for i in range(1, count + 1)]


def validate_targets(app: str, targets: Iterable[Target]) -> None:
    if not APP_RE.match(app):
        raise RouterError(f"app name {app!r}: expected lowercase letters, digits and '-'")
    seen: dict[tuple[str, int], str] = {}
    for t in targets:
        if not RELEASE_RE.match(t.release):
            raise RouterError(
                f"app {app}: release id {t.release!r} has characters HAProxy cannot carry "
                "(letters, digits, '.', '_' and '-' only)"
            )
        other = seen.get((t.host, t.port))
        if other is not None:
            raise RouterError(
                f"app {app}: two targets on {t.host}:{t.port} ({other} and {t.release})"
            )
        seen[(t.host, t.port)] = t.release


def plan_slots(
    current: list[Slot],
    targets: list[Target],
    *,
    busy: Mapping[str, int],
    now: float,
    drain_timeout: float,
    app: str,
) -> list[Slot]:
    """The slots after applying `targets`: reuse a slot per (release, host, port), else take
    a free or idle retired one; slots no longer wanted drain. Raises when slots run out.

    A target at weight 0 keeps a ready slot at weight 0: HAProxy balances no request to
    it, but a preview (PREVIEW_HEADER) reaches it. It takes only a slot nobody needs,
    and gives its slot up, when idle, to a weighted target that finds no other."""
    slots = [s.model_copy() for s in current]
    by_key = {(s.release, s.host, s.port): s for s in slots if s.release is not None}
    listed = {(t.release, t.host, t.port) for t in targets}
    standby = {(t.release, t.host, t.port) for t in targets if t.weight == 0}
    homeless = []
    for t in targets:
        slot = by_key.get((t.release, t.host, t.port))
        if slot is None:
            homeless.append(t)
        else:
            _place(slot, t)
    # weighted targets first: they must have a slot, one at weight 0 only may
    for t in sorted(homeless, key=lambda t: t.weight == 0):
        slot = _reusable(slots, listed, busy)
        if slot is None and t.weight > 0:
            slot = _spare(slots, standby, busy)
            if slot is None:
                live = sum(1 for s in slots if s.state in ("ready", "drain") or busy.get(s.name))
                raise RouterError(
                    f"app {app}: no free HAProxy slot for {t.release} on {t.host}:{t.port} "
                    f"({len(slots)} slots, {live} serving or draining); wait for the "
                    "draining instances to finish or start the router with more slots"
                )
        if slot is not None:
            slot.release, slot.host, slot.port = t.release, t.host, t.port
            _place(slot, t)
    for slot in slots:
        if slot.state == "ready" and (slot.release, slot.host, slot.port) not in listed:
            slot.state = "drain"
            slot.drain_until = now + drain_timeout
    return slots


def _place(slot: Slot, target: Target) -> None:
    slot.weight = target.weight
    slot.state = "ready"
    slot.drain_until = None


def _reusable(
    slots: list[Slot], listed: set[tuple[str, str, int]], busy: Mapping[str, int]
) -> Slot | None:
    """A never used slot, else an idle retired one (of a release no target lists)."""
    for slot in slots:
        if slot.state == "free":
            return slot
    for slot in slots:
        key = (slot.release, slot.host, slot.port)
        if slot.state == "maint" and key not in listed and not busy.get(slot.name):
            return slot
    return None


def _spare(
    slots: list[Slot], standby: set[tuple[str, str, int]], busy: Mapping[str, int]
) -> Slot | None:
    """The idle slot of a target at weight 0, which then has no slot (its previews get a
    503 until one frees up)."""
    for slot in slots:
        key = (slot.release, slot.host, slot.port)
        if slot.weight == 0 and key in standby and not busy.get(slot.name):
            return slot
    return None


def pins(app: AppState, spread: int) -> list[tuple[str, str]]:
    """Sticky routing: `<release>/<i>` -> a ready slot of that release with weight > 0,
    i in 0..spread-1.

    HAProxy picks `i` at random per request, so a pinned client still spreads over
    every instance of its release (exactly evenly for 1, 2, 3, 4 or 6 instances)."""
    if not app.sticky:
        return []
    ready = [s for s in app.slots if s.state == "ready" and s.weight > 0]
    return [("_sticky", "1"), *_spread(ready, spread)]


def previews(app: AppState, spread: int) -> list[tuple[str, str]]:
    """Preview routing (PREVIEW_HEADER): `<release>/<i>` -> a ready slot of that release,
    whatever its weight, i in 0..spread-1, spread like the pins."""
    return _spread([s for s in app.slots if s.state == "ready"], spread)


def previews_meanwhile(old: AppState, new: AppState, spread: int) -> list[tuple[str, str]]:
    """The preview entries that stay true while slots move from `old` to `new`: those of
    `old` whose slot carries the same release in both. Loaded before any slot is
    re-pointed, they keep a preview from reaching a release it does not name."""
    was, will = dict(slot_releases(old)), dict(slot_releases(new))
    return [(key, slot) for key, slot in previews(old, spread) if was[slot] == will.get(slot)]


def _spread(slots: Iterable[Slot], spread: int) -> list[tuple[str, str]]:
    by_release: dict[str, list[str]] = {}
    for s in slots:
        if s.release is not None:
            by_release.setdefault(s.release, []).append(s.name)
    entries = []
    for release, names in sorted(by_release.items()):
        entries += [(f"{release}/{i}", names[i % len(names)]) for i in range(spread)]
    return entries


def slot_releases(app: AppState) -> list[tuple[str, str]]:
    return [(s.name, s.release) for s in app.slots if s.release is not None]


def credit(state: RouterState, rows: Mapping[int, list[tuple[str, str, int]]]) -> None:
    """Add the connection failures each worker counted since the last read to the release
    its slot carries.

    `rows` maps a live worker pid to (app, slot, failures) rows. A worker not seen
    before counts from zero (a new worker after a reload); workers gone are forgotten,
    their last reading already credited."""
    seen: dict[str, dict[str, dict[str, int]]] = {}
    for pid, worker_rows in rows.items():
        before = state.seen.get(str(pid), {})
        after: dict[str, dict[str, int]] = {}
        for app_name, slot_name, failures in worker_rows:
            last = before.get(app_name, {}).get(slot_name, 0)
            delta = failures - last if failures >= last else failures
            after.setdefault(app_name, {})[slot_name] = failures
            app = state.apps.get(app_name)
            slot = app.slot(slot_name) if app is not None else None
            if slot is None or slot.release is None or not delta:
                continue
            totals = state.totals.setdefault(app_name, {}).setdefault(slot.release, Totals())
            totals.connect_failures += delta
        seen[str(pid)] = after
    state.seen = seen


def prune_totals(state: RouterState) -> None:
    """Forget removed apps, and the oldest retired releases beyond KEEP_RETIRED per app."""
    for app_name in [a for a in state.flag_totals if a not in state.apps]:
        del state.flag_totals[app_name]
    for app_name in list(state.totals):
        app = state.apps.get(app_name)
        if app is None:
            del state.totals[app_name]
            continue
        carried = {s.release for s in app.slots if s.release is not None}
        releases = state.totals[app_name]
        retired = [r for r in releases if r not in carried]
        for release in retired[: max(0, len(retired) - KEEP_RETIRED)]:
            del releases[release]


def counters_of(t: Totals) -> ReleaseCounters:
    return ReleaseCounters(
        requests=t.requests,
        errors_5xx=t.errors_5xx,
        connect_failures=t.connect_failures,
        latency_buckets=t.cumulative(),
        latency_sum=t.latency_sum,
    )


def release_counters(
    app: AppState, totals: Mapping[str, Totals], busy: Mapping[str, int]
) -> dict[str, ReleaseCounters]:
    """What the agent sees of an app: every release a slot carries, with its counters and
    its in-flight requests (summed over its slots, in every worker)."""
    out: dict[str, ReleaseCounters] = {}
    for slot in app.slots:
        if slot.release is None:
            continue
        counters = out.get(slot.release)
        if counters is None:
            t = totals.get(slot.release, Totals())
            counters = out[slot.release] = counters_of(t)
        counters.in_flight += busy.get(slot.name, 0)
    return out
