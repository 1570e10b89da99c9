"""The weighted choice of a target for each new request (and for sticky and preview ones)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conveyor.router.target import Upstream


class Balancer:
    """Smooth weighted round-robin (nginx's) over the targets with weight > 0.

    Over any window of sum(weights) requests each target gets exactly its share, so
    a 10% canary sees 10% of the traffic even at a handful of requests per second.
    """

    __slots__ = ("_by_release", "_listed", "_turns", "current", "releases", "upstreams")

    def __init__(self, upstreams: list[Upstream]) -> None:
        self.upstreams = [u for u in upstreams if u.weight > 0]
        self.current = [0] * len(self.upstreams)
        self.releases = frozenset(u.release for u in self.upstreams)
        self._by_release: dict[str, Balancer] = {}
        # Every target of the spec per release, weight 0 included: what previews may reach.
        self._listed: dict[str, list[Upstream]] = {}
        for u in upstreams:
            self._listed.setdefault(u.release, []).append(u)
        self._turns: dict[str, int] = {}

    def pick(self, exclude: list[Upstream] | None = None) -> Upstream | None:
        """The next target; skips targets that just refused connections unless all did."""
        ups = self.upstreams
        n = len(ups)
        if n == 1 and exclude is None:
            return ups[0]
        cur = self.current
        best = -1
        total = 0
        for skip_down in (True, False):
            for i in range(n):
                u = ups[i]
                if (skip_down and u.down) or (exclude is not None and u in exclude):
                    continue
                cur[i] += u.weight
                total += u.weight
                if best < 0 or cur[i] > cur[best]:
                    best = i
            if best >= 0:
                break
        if best < 0:
            return None
        cur[best] -= total
        return ups[best]

    def pick_release(self, release: str) -> Upstream | None:
        """The next target of one release (sticky sessions), or None if it has no live one."""
        if release not in self.releases:
            return None
        sub = self._by_release.get(release)
        if sub is None:
            sub = self._by_release[release] = Balancer(
                [u for u in self.upstreams if u.release == release]
            )
        if all(u.down for u in sub.upstreams):
            return None
        return sub.pick()

    def pick_preview(self, release: str, exclude: list[Upstream] | None = None) -> Upstream | None:
        """The next target of `release` whatever its weight (a preview request), taking
        turns; None when the release has no target that is up and not in `exclude`."""
        listed = self._listed.get(release)
        if not listed:
            return None
        turn = self._turns.get(release, 0)
        n = len(listed)
        for i in range(n):
            u = listed[(turn + i) % n]
            if not u.down and (exclude is None or u not in exclude):
                self._turns[release] = (turn + i + 1) % n
                return u
        return None
