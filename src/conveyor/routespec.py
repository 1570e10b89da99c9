"""What the agent tells its host's router, and what the router reports: the admin wire.

Both sides import this module: the router process (`conveyor.router`, the data plane)
parses a `RouteSpec` per app from its admin socket, and the agent's drivers
(`conveyor.agent.routing`) send it. Neither side imports the other.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from conveyor.hostroutes import Claim, check_domain, check_prefix, claims

# what a router reports travels on to the server: those are wire models, defined once there
from conveyor.protocol import (
    LATENCY_BUCKETS,
    PREVIEW_HEADER,
    AppMetrics,
    ReleaseCounters,
    RouterMetrics,
)
from conveyor.protocol.desired import HostFlags

__all__ = [
    "LATENCY_BUCKETS",
    "PREVIEW_HEADER",
    "AppMetrics",
    "ReleaseCounters",
    "RouteSpec",
    "RouterMetrics",
    "Target",
    "TlsRoute",
]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Target(Model):
    """One instance of one release, reachable on loopback."""

    release: str
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    weight: int = Field(
        ge=0, le=100, description="share of new requests; 0: none but previews (PREVIEW_HEADER)"
    )


class TlsRoute(Model):
    """HTTPS for an app with domains: the host's shared HTTPS port and the app's certificate.

    `pem` is a file the agent wrote (the certificate, its chain, then the key); a new
    certificate comes as a new file name, which the router loads without a restart."""

    port: int = Field(ge=1, le=65535, description="the host's shared HTTPS port")
    pem: str = Field(description="path of the PEM certificate chain followed by its key")
    redirect_http: bool = Field(default=True, description="answer plain HTTP with a redirect")


class RouteSpec(Model):
    """The whole routing of one app on this host; applying it replaces the previous one.

    A target absent from a new spec, or present with weight 0, gets no new request;
    its in-flight requests finish (up to `drain_timeout`), and `in_flight` in the
    metrics tells the agent when it is safe to stop the instance. A target of any
    weight still answers the requests that name its release in `PREVIEW_HEADER`.
    """

    app: str
    port: int = Field(ge=1, le=65535, description="the public port (service.port)")
    bind: str = "0.0.0.0"
    targets: list[Target] = []
    sticky: bool = Field(default=False, description="pin a client to a release by cookie")
    flags: HostFlags | None = Field(
        default=None, description="flags evaluated per request, passed in X-Conveyor-Flags"
    )
    drain_timeout: float = Field(default=30.0, ge=0)
    domains: list[str] = Field(
        default=[],
        description="host names this app answers on `port`, the host's shared HTTP port, "
        "beside the other apps with domains (none: the port is the app's alone)",
    )
    path_prefix: str = Field(default="", description="only requests under it ('': all)")
    strip_prefix: bool = Field(default=False, description="relay /prefix/x as /x")
    tls: TlsRoute | None = Field(
        default=None, description="also serve the domains over HTTPS (needs domains)"
    )

    @field_validator("domains")
    @classmethod
    def _domains(cls, domains: list[str]) -> list[str]:
        return [check_domain(d) for d in domains]

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        return check_prefix(prefix) if prefix else ""

    @model_validator(mode="after")
    def _tls_needs_domains(self) -> RouteSpec:
        if self.tls is not None and not self.domains:
            raise ValueError("tls needs domains (HTTPS is served by host name)")
        return self

    def claims(self) -> list[Claim]:
        return claims(self.domains, self.path_prefix or None)
