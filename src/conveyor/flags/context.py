"""The Unleash context: who and where a flag is evaluated for."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Context:
    """A request's context; `properties` holds the custom fields (plan, version…)."""

    user_id: str | None = None
    session_id: str | None = None
    remote_address: str | None = None
    environment: str | None = None
    app_name: str | None = None
    current_time: str | None = None
    properties: Mapping[str, str | None] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Context:
        """A context from its Unleash JSON form (camelCase keys, `properties`)."""
        props = data.get("properties") or {}

        def text(key: str) -> str | None:
            value = data.get(key)
            return None if value is None else str(value)

        return cls(
            user_id=text("userId"),
            session_id=text("sessionId"),
            remote_address=text("remoteAddress"),
            environment=text("environment"),
            app_name=text("appName"),
            current_time=text("currentTime"),
            properties={k: None if v is None else str(v) for k, v in props.items()},
        )

    def value(self, name: str) -> str | None:
        """A field by its Unleash name: a standard field first, else a property."""
        standard = {
            "userId": self.user_id,
            "sessionId": self.session_id,
            "remoteAddress": self.remote_address,
            "environment": self.environment,
            "appName": self.app_name,
            "currentTime": self.current_time,
        }
        if name in standard:
            found = standard[name]
            if found:
                return found
        return self.properties.get(name) or None


def random_stickiness() -> str:
    """The stickiness of a context with none: a bucket at random, as the SDKs do."""
    return str(random.randint(1, 100))


Random = Callable[[], str]
