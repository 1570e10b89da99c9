"""Hosts: their enrolment, and placements (an app's share of one host, desired and observed)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .desired import ReleaseWeight
from .observed import ObservedRelease, ObservedState
from .wire import Timestamp, Wire

HostState = Literal["pending", "enrolled", "revoked"]


class HostCreate(Wire):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)


class HostOut(Wire):
    name: str
    state: HostState
    online: bool
    last_seen: Timestamp | None
    generation: int
    applied_generation: int | None
    observed: ObservedState | None = None


class HostCreated(HostOut):
    enrolment_token: str
    # the SHA-256 of the server's TLS certificate (when it serves TLS itself), for the
    # agent's --server-fingerprint
    server_fingerprint: str | None = None


class Enrol(Wire):
    name: str = Field(max_length=100)
    token: str = Field(max_length=200)


class Enrolled(Wire):
    agent_token: str


class Placement(Wire):
    """One host's share of an app: what it should run and what its agent reports."""

    host: str
    online: bool
    converged: bool
    desired: list[ReleaseWeight]
    observed: list[ObservedRelease]
    error: str | None = None


HostOut.model_rebuild()
HostCreated.model_rebuild()
Placement.model_rebuild()
