"""The Unleash delta API's events folded into one features document."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..protocol.unleash import ClientFeatures, Feature, Segment


def apply_events(events: Iterable[Mapping[str, Any]]) -> ClientFeatures:
    """The document after hydration and feature/segment updates and removals, in order."""
    features: dict[str, Feature] = {}
    segments: dict[int, Segment] = {}
    for event in events:
        kind = event.get("type")
        if kind == "hydration":
            features = {f.name: f for f in map(Feature.model_validate, event["features"])}
            segments = {s.id: s for s in map(Segment.model_validate, event.get("segments", []))}
        elif kind == "feature-updated":
            feature = Feature.model_validate(event["feature"])
            features[feature.name] = feature
        elif kind == "feature-removed":
            features.pop(event["featureName"], None)
        elif kind == "segment-updated":
            segment = Segment.model_validate(event["segment"])
            segments[segment.id] = segment
        elif kind == "segment-removed":
            segments.pop(int(event["segmentId"]), None)
    return ClientFeatures(features=list(features.values()), segments=list(segments.values()))
