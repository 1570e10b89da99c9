"""Small value types of conveyor.yml: names, ports, batch sizes, HTTP probes."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    AfterValidator,
    BeforeValidator,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    Strict,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from conveyor.config.base import describe
from conveyor.config.durations import parse_percent

APP_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
ENVIRONMENT_NAME_PATTERN = r"^[a-z0-9-]+$"
ENV_VAR_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
SECRET_NAME_PATTERN = r"^[A-Z_][A-Z0-9_]*$"
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")


class ScalarType:
    """Mixin for frozen dataclasses that pydantic validates from one YAML scalar.

    Subclasses implement `parse` (accepting an instance as is) and `dump` (the YAML
    spelling), and set JSON_SCHEMA.
    """

    JSON_SCHEMA: ClassVar[dict[str, Any]]

    @classmethod
    def parse(cls, value: object) -> Self:
        raise NotImplementedError

    def dump(self) -> object:
        return str(self)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.parse,
            serialization=core_schema.plain_serializer_function_ser_schema(_dump),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return dict(cls.JSON_SCHEMA)


def _dump(value: ScalarType) -> object:
    return value.dump()


def _matching(pattern: str, what: str) -> AfterValidator:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"expected {what}, got {describe(value)}")
        return value

    return AfterValidator(check)


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("expected a non-empty string")
    return value


NonEmptyStr = Annotated[
    str, AfterValidator(_non_empty), WithJsonSchema({"type": "string", "minLength": 1})
]

RunnerLabel = Annotated[
    str,
    _matching(
        APP_NAME_PATTERN,
        "a runner label of lowercase letters, digits and dashes (like linux or big)",
    ),
]
AppName = Annotated[
    str,
    _matching(
        APP_NAME_PATTERN,
        "an app name of lowercase letters, digits and dashes, not starting or ending "
        "with a dash (like shop or my-app)",
    ),
    WithJsonSchema({"type": "string", "pattern": APP_NAME_PATTERN}),
]


def _at_most(limit: int, what: str) -> AfterValidator:
    """A length the store holds (a column of `limit` characters: PostgreSQL enforces it)."""

    def check(value: str) -> str:
        if len(value) > limit:
            raise ValueError(f"{what} of at most {limit} characters, got {len(value)}")
        return value

    return AfterValidator(check)


MAX_ENVIRONMENT_NAME = 100  # store.models.Deployment.environment
MAX_STEP_NAME = 255  # store.models.Step.name

EnvironmentName = Annotated[
    str,
    _matching(
        ENVIRONMENT_NAME_PATTERN,
        "an environment name of lowercase letters, digits and dashes (like staging)",
    ),
    _at_most(MAX_ENVIRONMENT_NAME, "an environment name"),
    WithJsonSchema(
        {"type": "string", "pattern": ENVIRONMENT_NAME_PATTERN, "maxLength": MAX_ENVIRONMENT_NAME}
    ),
]

StepName = Annotated[
    str,
    AfterValidator(_non_empty),
    _at_most(MAX_STEP_NAME, "a step name"),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_STEP_NAME}),
]

EnvVarName = Annotated[
    str,
    _matching(ENV_VAR_PATTERN, "an environment variable name like LOG_LEVEL"),
    WithJsonSchema({"type": "string", "pattern": ENV_VAR_PATTERN}),
]

SecretName = Annotated[
    str,
    _matching(
        SECRET_NAME_PATTERN,
        "a secret name of capital letters, digits and underscores (like DATABASE_URL)",
    ),
    WithJsonSchema({"type": "string", "pattern": SECRET_NAME_PATTERN}),
]


def _stringify_env_values(value: object) -> object:
    # `WORKERS: 4` and `DEBUG: true` are what people write; the process sees strings.
    if not isinstance(value, dict):
        return value
    out: dict[object, object] = {}
    for key, item in value.items():
        if isinstance(item, bool):
            out[key] = "true" if item else "false"
        elif isinstance(item, int | float):
            out[key] = str(item)
        else:
            out[key] = item
    return out


EnvMap = Annotated[dict[EnvVarName, str], BeforeValidator(_stringify_env_values)]
"""Environment variables; numbers and booleans are accepted and become strings."""


def _between(low: int, high: int, what: str) -> AfterValidator:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"expected {what} from {low} to {high}, got {value}")
        return value

    return AfterValidator(check)


Port = Annotated[
    int,
    Strict(),
    _between(1, 65535, "a port number"),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 65535}),
]

StatusCode = Annotated[
    int,
    Strict(),
    _between(100, 599, "an HTTP status code"),
    WithJsonSchema({"type": "integer", "minimum": 100, "maximum": 599}),
]

TrafficPercent = Annotated[
    int,
    Strict(),
    _between(1, 100, "a percent of traffic"),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 100}),
]


@dataclass(frozen=True)
class Batch(ScalarType):
    """How many hosts a rolling deployment changes at a time: a count or a share."""

    hosts: int | None = None
    fraction: float | None = None

    JSON_SCHEMA: ClassVar[dict[str, Any]] = {
        "anyOf": [
            {"type": "integer", "minimum": 1},
            {"type": "string", "pattern": r"^\d+(?:\.\d+)?\s*%$"},
        ],
        "description": 'Hosts at a time: a number of hosts, or a share of them like "25%".',
        "examples": [1, "25%"],
    }

    @classmethod
    def parse(cls, value: object) -> Batch:
        if isinstance(value, Batch):
            return value
        expected = 'expected a number of hosts (1 or more) or a percentage like "25%"'
        if isinstance(value, bool):
            raise ValueError(f"{expected}, got {describe(value)}")
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, int):
            if value < 1:
                raise ValueError(f"{expected}, got {describe(value)}")
            return cls(hosts=value)
        if isinstance(value, str) and value.strip().endswith("%"):
            fraction = parse_percent(value)
            if fraction <= 0:
                raise ValueError(f"expected a percentage above 0% like 25%, got {describe(value)}")
            return cls(fraction=fraction)
        raise ValueError(f"{expected}, got {describe(value)}")

    def size(self, n_hosts: int) -> int:
        """Hosts per batch out of n_hosts: shares round down; at most n_hosts, at least 1."""
        if self.hosts is not None:
            wanted = self.hosts
        else:
            # The epsilon keeps 0.3 * 10 from rounding down to 2.
            wanted = math.floor((self.fraction or 0.0) * n_hosts + 1e-9)
        return max(1, min(wanted, n_hosts))

    def dump(self) -> object:
        return self.hosts if self.hosts is not None else str(self)

    def __str__(self) -> str:
        if self.hosts is not None:
            return str(self.hosts)
        return f"{(self.fraction or 0.0) * 100:.6g}%"


@dataclass(frozen=True)
class HttpProbe(ScalarType):
    """An HTTP request of a verify check: "GET /healthz" (a bare path means GET)."""

    method: str
    path: str

    JSON_SCHEMA: ClassVar[dict[str, Any]] = {
        "type": "string",
        "pattern": rf"^(?:(?:{'|'.join(HTTP_METHODS)}) +)?/\S*$",
        "description": "METHOD /path, like GET /healthz; a bare path means GET.",
        "examples": ["GET /healthz"],
    }

    @classmethod
    def parse(cls, value: object) -> HttpProbe:
        if isinstance(value, HttpProbe):
            return value
        expected = "expected a request like 'GET /healthz'"
        if not isinstance(value, str):
            raise ValueError(f"{expected}, got {describe(value)}")
        parts = value.split()
        if len(parts) == 1:
            parts = ["GET", parts[0]]
        if len(parts) != 2:
            raise ValueError(f"{expected}, got {describe(value)}")
        method, path = parts
        if method not in HTTP_METHODS:
            raise ValueError(
                f"expected an HTTP method ({', '.join(HTTP_METHODS)}) before the path, "
                f"got {describe(value)}"
            )
        if not path.startswith("/"):
            raise ValueError(f"expected a path starting with '/', got {describe(value)}")
        return cls(method=method, path=path)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"
