"""Desired state: what the server wants a host to run."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .checks import ChecksRequest
from .unleash import ClientFeatures
from .wire import Wire


class InstanceLimits(Wire):
    """`service.limits` of conveyor.yml: what each instance may use (None: no limit)."""

    memory: int | None = Field(default=None, description="bytes")
    cpu: float | None = Field(default=None, description="CPUs, e.g. 0.5")
    files: int | None = Field(default=None, description="open files")


class TlsSpec(Wire):
    """`tls:` of conveyor.yml for one environment, secrets resolved: where the host gets
    the certificate of the app's domains (exactly one source is set)."""

    cert_file: str | None = Field(default=None, description="PEM certificate path on the host")
    key_file: str | None = Field(default=None, description="PEM key path on the host")
    cert_pem: str | None = Field(default=None, description="PEM certificate from a secret")
    key_pem: str | None = Field(default=None, description="PEM key from a secret")
    acme_directory: str | None = Field(default=None, description="ACME directory URL")
    acme_email: str | None = None
    acme_error: str | None = Field(
        default=None,
        description="why the server's last renewal of the ACME certificate failed (it keeps "
        "serving; the host shows this as the app's error)",
    )
    redirect_http: bool = True


class ServiceSpec(Wire):
    """How a release runs on a host: SPEC §2 `service`, with secret values resolved."""

    start: str
    port: int
    health_path: str = "/healthz"
    health_interval: float = 1.0
    health_timeout: float = 30.0
    drain: float = 30.0
    keep_warm: float = 600.0
    keep_warm_releases: int = Field(
        default=1, description="how many retired releases stay warm (the last ones retired)"
    )
    env: dict[str, str] = {}
    install_hook: str | None = None
    user: str | None = Field(default=None, description="service.user: instances run as it")
    limits: InstanceLimits = InstanceLimits()
    domains: list[str] = Field(
        default=[], description="served on the host's shared HTTP port by Host header"
    )
    path_prefix: str = Field(default="", description="only requests under it ('': all)")
    strip_prefix: bool = False
    tls: TlsSpec | None = Field(default=None, description="HTTPS on the shared HTTPS port")


class MigrateRequest(Wire):
    """Run hooks.migrate once for one deployment, after install and before the instance starts."""

    id: str = Field(
        description="unique per deployment, e.g. 'deployment-12'; the agent runs each id once"
    )
    command: str
    timeout: float = 600.0
    pg_options: str = Field(
        default="",
        description="PGOPTIONS for the command's PostgreSQL sessions (lock_timeout, "
        "statement_timeout), before the app's own",
    )


class MigrationResult(Wire):
    id: str
    state: Literal["running", "succeeded", "failed"]
    exit_code: int | None = None
    output: str = Field(
        default="", description="the last 4000 characters of the hook's stdout+stderr"
    )
    finished_at: float | None = None  # unix time


class DesiredRelease(Wire):
    release: str
    sha256: str
    artifact: str = Field(description="path on the server to download the artifact from")
    weight: int = Field(ge=0, le=100)
    service: ServiceSpec
    migrate: MigrateRequest | None = None


class HostFlags(Wire):
    """An app's flags for its routers to evaluate on each request (conveyor.yml
    `flags.stickiness`): who a request is for, and the flags' Unleash document."""

    stickiness: str = Field(description="cookie:NAME or header:NAME")
    document: ClientFeatures
    guarded: list[str] = Field(
        default_factory=list,
        description="flags under a guarded rollout: the router counts requests per answer",
    )


class DesiredApp(Wire):
    app: str
    releases: list[DesiredRelease]
    sticky: bool = False
    flags: HostFlags | None = None


class DesiredState(Wire):
    """What the server wants a host to run; agents converge toward it."""

    host: str
    generation: int
    apps: list[DesiredApp] = []
    # infrastructure checks a deployment waits for before it moves traffic (checks.py)
    checks: list[ChecksRequest] = []
    challenges: dict[str, str] = Field(
        default={},
        description="ACME HTTP-01 answers (token -> key authorization) the host's router "
        "serves on its shared HTTP port while the server orders a certificate for an "
        "environment of this host (deploy/certificates.py)",
    )


class HostAppSet(Wire):
    """Set the releases and weights of an app on one host (the reconciler's input)."""

    releases: list[ReleaseWeight] = Field(min_length=0, max_length=100)
    sticky: bool = False


class ReleaseWeight(Wire):
    release: str = Field(max_length=80)
    weight: int = Field(ge=0, le=100)
    migrate: str | None = Field(
        default=None,
        max_length=255,
        description="a migration id: run hooks.migrate once for it before this release starts",
    )


HostAppSet.model_rebuild()
