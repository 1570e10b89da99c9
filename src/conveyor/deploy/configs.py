"""A release's conveyor.yml as a model, parsed once: a release's config never changes.

Serving a desired state reads it for every host (its service, its migration, which
environment lists the host); a deployment step for a thousand hosts read it a
thousand times over (tens of milliseconds each for a config listing those hosts).
Callers must not modify the model they get.
"""

from __future__ import annotations

import functools

from conveyor.config import Config


@functools.lru_cache(maxsize=32)
def release_config(text: str) -> Config:
    """The parsed config of this JSON text (a release's recorded conveyor.yml)."""
    return Config.model_validate_json(text)
