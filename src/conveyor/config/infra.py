"""`environments.<name>.checks`: infrastructure checks each host's agent runs before a
deployment moves traffic (agent/infrachecks.py runs them)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field, Strict, model_validator

from conveyor.config.base import Section, describe, invalid
from conveyor.config.durations import Percent, PositiveDuration
from conveyor.config.values import NonEmptyStr

KINDS = ("tcp", "tls", "disk", "mount", "command")
_HOST_PORT = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(?P<port>\d{1,5})$")


def _host_port(value: str) -> str:
    found = _HOST_PORT.fullmatch(value.strip())
    if found is None or not 1 <= int(found["port"]) <= 65535:
        raise ValueError(f"expected host:port like 127.0.0.1:5432, got {describe(value)}")
    return value.strip()


def _absolute(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"expected an absolute path like /data, got {describe(value)}")
    return value


HostPort = Annotated[str, AfterValidator(_host_port)]
AbsolutePath = Annotated[str, AfterValidator(_absolute)]


class TlsCheck(Section):
    """A TLS certificate served at host:port: valid for the host name, with days left."""

    host: NonEmptyStr
    port: Annotated[int, Strict(), Field(ge=1, le=65535)] = 443
    min_days: Annotated[int, Strict(), Field(ge=0)] = 14


class DiskCheck(Section):
    """Free space on the file system holding a path."""

    path: AbsolutePath
    min_free: Percent = 0.1


class InfraCheckSetting(Section):
    """One check: exactly one of tcp, tls, disk, mount or command (and a timeout)."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": [kind]} for kind in KINDS]})

    tcp: HostPort | None = Field(default=None, description="host:port that accepts TCP")
    tls: TlsCheck | None = None
    disk: DiskCheck | None = None
    mount: AbsolutePath | None = Field(default=None, description="a path that is a mount point")
    command: NonEmptyStr | None = Field(
        default=None,
        description="run with bash in the app's shared directory on the host; exit 0 passes",
    )
    timeout: PositiveDuration = Field(default=10.0, description="Default: 10s.")

    @model_validator(mode="after")
    def _one_kind(self) -> InfraCheckSetting:
        given = [kind for kind in KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            got = f", got {' and '.join(given)}" if given else ""
            raise invalid(
                [((), f"expected exactly one of tcp, tls, disk, mount or command{got}", None)]
            )
        return self
