"""A deployment's steps, planned once when it starts: a pure function of the environment.

Every step that moves traffic carries the whole desired state of the hosts it
touches (`targets`), computed here from what each host ran before. Executing a
step is then only "write these targets, wait until the hosts report them", the
same for every strategy, and a server restarted mid-step writes the same thing
again. The strategy modules (rolling.py, bluegreen.py, canary.py) each say which
steps their environment gets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conveyor.protocol import ReleaseWeight

Targets = dict[str, list[ReleaseWeight]]


@dataclass(frozen=True)
class PlannedStep:
    """One step before it is stored: what it writes to which hosts and what it waits for."""

    kind: (
        str  # contract | migrate | batch | preview | switch | weight | verify | monitor | rollback
    )
    name: str
    targets: Targets = field(default_factory=dict)
    weight: int | None = None
    checks: bool = False  # run the environment's http checks on these hosts once converged
    preview: bool = False  # ... addressed to the new release through the preview header
    pause: float = 0.0  # canary: watch this long once converged
    analyse: bool = False  # canary: judge the new release's counters during the pause
    holdback_max: int = 0  # monitor: the most its holdback is raised to when it begins

    def options(self) -> dict[str, object]:
        return {
            "checks": self.checks,
            "preview": self.preview,
            "pause": self.pause,
            "analyse": self.analyse,
            "holdback_max": self.holdback_max,
        }


@dataclass(frozen=True)
class Context:
    """What a strategy plans from: the environment, its hosts and what each serves now."""

    release: str
    hosts: list[str]
    previous: Targets
    batch_size: int = 1
    steps: tuple[int, ...] = (100,)
    step_pause: float = 0.0
    analyse: bool = False
    migration: str | None = None  # the id hooks.migrate runs under, if the app has one
    # (the release that brought it, the id it runs under): a pending contract that may run
    contract: tuple[str, str] | None = None
    verify_previous: bool = False  # the environment has verify checks to run on the old release
    monitor: float = 0.0  # the watch window after 100%
    holdback: int = 0  # percent of traffic the previous release keeps during the window
    holdback_max: int = 0  # ... at most, once sized from the traffic when the window begins

    def serving(self, host: str) -> str | None:
        """The release taking most traffic on a host before the deployment, if any."""
        items = [r for r in self.previous.get(host, []) if r.weight > 0]
        if not items:
            return None
        return max(items, key=lambda r: r.weight).release

    def only_new(self) -> list[ReleaseWeight]:
        return [ReleaseWeight(release=self.release, weight=100)]

    def split(self, host: str, weight: int) -> list[ReleaseWeight]:
        """The new release at `weight` beside the one the host served (all of it if none)."""
        old = self.serving(host)
        if old is None or old == self.release or weight >= 100:
            return self.only_new()
        return [
            ReleaseWeight(release=old, weight=100 - weight),
            ReleaseWeight(release=self.release, weight=weight),
        ]

    def contract_step(self) -> list[PlannedStep]:
        """migrations.contract of the release serving, on the first host, before anything
        else moves: its desired state unchanged but for the contract asked of that release."""
        if self.contract is None:
            return []
        release, migration = self.contract
        first = self.hosts[0]
        items = self.previous.get(first, [])
        if not any(r.release == release for r in items):
            return []
        targets = [
            r.model_copy(update={"migrate": migration}) if r.release == release else r
            for r in items
        ]
        return [PlannedStep("contract", f"contract of {release} on {first}", {first: targets})]

    def migrate_step(self) -> list[PlannedStep]:
        """hooks.migrate on the first host: the new release installed beside the old, no traffic."""
        if self.migration is None:
            return []
        first = self.hosts[0]
        targets = self.split(first, 0)
        targets = [
            r.model_copy(update={"migrate": self.migration}) if r.release == self.release else r
            for r in targets
        ]
        steps = [PlannedStep("migrate", f"migrate on {first}", {first: targets})]
        old = self.serving(first)
        if self.verify_previous and old is not None and old != self.release:
            # still all of the traffic: the verify checks reach it on the migrated schema
            steps.append(PlannedStep("compat", f"verify {old} on the migrated schema"))
        return steps

    def preview_step(self) -> PlannedStep:
        """The new release started beside the old on every host, checked by preview only."""
        return PlannedStep(
            "preview",
            f"start {self.release} beside the old release on {len(self.hosts)} host(s)",
            {h: self.split(h, 0) for h in self.hosts},
            weight=0,
            checks=True,
            preview=True,
        )

    def switch_step(self) -> PlannedStep:
        """Every host to the new release alone, in one write."""
        return PlannedStep(
            "switch",
            f"switch {len(self.hosts)} router(s) to {self.release}",
            {h: self.only_new() for h in self.hosts},
            weight=100,
        )

    def verify_step(self) -> PlannedStep:
        return PlannedStep("verify", "verify", {})

    def monitor_steps(self) -> list[PlannedStep]:
        """The watch window: every host on the new release (the old one warm, keeping the
        holdback's share of traffic beside it) while the judge and the ceilings keep looking;
        then, with a holdback, a last step that gives the new release all the traffic."""
        if self.monitor <= 0:
            return []
        held = self.holdback > 0 and any(
            (old := self.serving(h)) is not None and old != self.release for h in self.hosts
        )
        share = held_back(self.holdback) if held else ""
        steps = [
            PlannedStep(
                "monitor",
                f"watch {self.release} for {self.monitor:g} s{share}",
                {h: self.split(h, 100 - self.holdback) for h in self.hosts},
                weight=100 - self.holdback if held else 100,
                pause=self.monitor,
                analyse=self.analyse,
                holdback_max=max(self.holdback, self.holdback_max) if held else 0,
            )
        ]
        if held:
            steps.append(
                PlannedStep(
                    "switch",
                    f"end the holdback: 100% of traffic to {self.release}",
                    {h: self.only_new() for h in self.hosts},
                    weight=100,
                )
            )
        return steps


def held_back(share: int, rps: float | None = None) -> str:
    """The end of a watch window step's name: its holdback (and the traffic it was sized to)."""
    sized = f", sized to {rps:.0f} req/s" if rps is not None else ""
    return f", {share}% held back on the previous release{sized}"


def rollback_targets(previous: Targets, touched: list[str]) -> Targets:
    """What the touched hosts go back to: exactly what they ran before."""
    return {host: list(previous.get(host, [])) for host in touched}


def chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
