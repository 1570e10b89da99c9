"""The JSON Schema of conveyor.yml, for editors and `conveyor schema`."""

from __future__ import annotations

from typing import Any

from conveyor.config.models import Config

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def config_json_schema() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of conveyor.yml, as a JSON-serializable dict.

    Durations, percentages, windows and batch sizes are described as strings with a
    pattern, the way they are written in the file.
    """
    schema = Config.model_json_schema(mode="validation")
    schema["title"] = "conveyor.yml"
    schema["description"] = (
        "How conveyor tests, builds and deploys an app: one file at the root of its repository."
    )
    return {"$schema": SCHEMA_DIALECT, **schema}
