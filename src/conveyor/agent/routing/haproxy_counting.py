"""HAProxy's request log, counted: each sample credited to the release its slot carries."""

from __future__ import annotations

from conveyor.agent.routing.haproxy_config import app_of_backend
from conveyor.agent.routing.haproxy_logs import Sample, bucket_index
from conveyor.agent.routing.haproxy_state import RouterState, Totals

# (backend, slot) -> the release's totals that slot's requests count for (None: no release)
Sinks = dict[tuple[str, str], Totals | None]


def count_sample(state: RouterState, sinks: Sinks, sample: Sample) -> None:
    """One request done: count it for the release its slot carries (`sinks` caches the
    lookup until the slots change), and for each answer of a guarded flag it carried."""
    backend, slot_name, status, latency, answers = sample
    key = (backend, slot_name)
    try:
        totals = sinks[key]
    except KeyError:
        totals = sinks[key] = _sink(state, backend, slot_name)
    if totals is None:
        return  # e.g. a 503 for want of any server: no release to blame
    _add(totals, status, latency)
    if answers:
        _count_answers(state, backend, answers, status, latency)


def _add(totals: Totals, status: int, latency: float) -> None:
    totals.requests += 1
    if status >= 500:
        totals.errors_5xx += 1
    totals.latency_counts[bucket_index(latency)] += 1
    totals.latency_sum += latency


def _count_answers(
    state: RouterState, backend: str, answers: str, status: int, latency: float
) -> None:
    """The answers of the app's guarded flags (`new-checkout=on`), as the embedded router
    counts them (router.metrics.flag_counters)."""
    app_name = app_of_backend(backend)
    app = state.apps.get(app_name) if app_name is not None else None
    if app is None or not app.guarded:
        return
    kept = state.flag_totals.setdefault(app.app, {})
    for answer in answers.split("; "):
        if answer.partition("=")[0] in app.guarded:
            totals = kept.get(answer)
            if totals is None:
                totals = kept[answer] = Totals()
            _add(totals, status, latency)


def _sink(state: RouterState, backend: str, slot_name: str) -> Totals | None:
    app_name = app_of_backend(backend)
    app = state.apps.get(app_name) if app_name is not None else None
    slot = app.slot(slot_name) if app is not None else None
    if app is None or slot is None or slot.release is None:
        return None
    return state.totals.setdefault(app.app, {}).setdefault(slot.release, Totals())
