"""`service.user` and `service.limits`: whom an app's instances run as, and their limits."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, Field, Strict, WithJsonSchema

from conveyor.config.base import Section

# useradd's default NAME_REGEX, a trailing $ (machine accounts) left out
USER_NAME_PATTERN = r"^[a-z_][a-z0-9_-]{0,31}$"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
MIN_MEMORY = 8 * 1024**2  # below this nothing starts, bash included
MAX_FILES = 1 << 20  # Linux's default fs.nr_open


def parse_size(value: object) -> int:
    """Bytes from `512M`, `1.5G`, `65536` (K, M, G, T are powers of 1024, as systemd's)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 512M or 2G, got {value}")
    if isinstance(value, int):
        size = value
    else:
        found = _SIZE.match(str(value))
        if found is None:
            raise ValueError(f"expected a size like 512M or 2G, got {value!r}")
        size = int(float(found.group(1)) * _UNITS[found.group(2).upper()])
    if size < MIN_MEMORY:
        raise ValueError(f"expected at least 8M of memory, got {value!r}")
    return size


def _user_name(value: object) -> object:
    if isinstance(value, str):
        if value == "root" or value == "0":
            raise ValueError(
                "expected an unprivileged user, got 'root': instances must not run as root; "
                "leave service.user out to run them as the agent's user"
            )
        if not re.match(USER_NAME_PATTERN, value):
            raise ValueError(
                f"expected a user name (lower case letters, digits, - and _, at most 32), "
                f"got {value!r}"
            )
    return value


UserName = Annotated[
    str,
    BeforeValidator(_user_name),
    WithJsonSchema(
        {"type": "string", "pattern": USER_NAME_PATTERN, "description": "A user on each host."}
    ),
]
MemorySize = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\d+(\.\d+)?[KMGTkmgt]?$"},
                {"type": "integer", "minimum": MIN_MEMORY},
            ],
            "description": "Bytes, or a size like 512M or 2G (powers of 1024).",
        }
    ),
]


class Limits(Section):
    """Limits of each instance of the app: through a transient systemd unit when systemd
    runs the host, else setrlimit (and cgroup v2 when the agent may write it)."""

    memory: MemorySize | None = Field(
        default=None, description="Memory of the instance (MemoryMax, else RLIMIT_AS)."
    )
    cpu: Annotated[float, Strict(False)] | None = Field(
        default=None, gt=0, le=1024, description="CPUs it may use, e.g. 0.5 or 2 (CPUQuota)."
    )
    files: Annotated[int, Strict()] | None = Field(
        default=None, ge=64, le=MAX_FILES, description="Open files (LimitNOFILE, RLIMIT_NOFILE)."
    )


__all__ = ["Limits", "MemorySize", "UserName", "parse_size"]
