"""`domains:`, `path_prefix:` and `strip_prefix:` of conveyor.yml (issue 14 point 1).

An app with domains is served on its hosts' shared HTTP port (the agent's `--http-port`,
default 80), told apart from the other apps there by the request's Host header and,
optionally, a path prefix. The keys may be written under `service:` (every environment)
or under one environment (over the service's); `effective_routing` merges them.
"""

from __future__ import annotations

from typing import Annotated, Any, NamedTuple, Protocol

from pydantic import AfterValidator, Field, WithJsonSchema

from conveyor.config.base import invalid
from conveyor.config.tls import Tls, as_tls
from conveyor.hostroutes import check_domain, check_prefix

Domain = Annotated[
    str,
    AfterValidator(check_domain),
    WithJsonSchema(
        {"type": "string", "description": "A host name like shop.example.com, *.example.com"}
    ),
]
PathPrefix = Annotated[
    str,
    AfterValidator(check_prefix),
    WithJsonSchema({"type": "string", "description": "A path prefix like /api"}),
]


def _distinct_domains(domains: list[str] | None) -> list[str] | None:
    if domains is None:
        return None
    if not domains:
        raise invalid([((), "expected at least one host name, like [shop.example.com]", [])])
    seen: set[str] = set()
    for i, name in enumerate(domains):
        if name in seen:
            raise invalid([((i,), f"domain {name!r} is listed twice", name)])
        seen.add(name)
    return domains


Domains = Annotated[list[Domain] | None, AfterValidator(_distinct_domains)]


def domains_field() -> Any:
    return Field(
        default=None,
        description="Host names served on the hosts' shared HTTP port (the agent's "
        "--http-port); requests for other names never reach this app.",
    )


def prefix_field() -> Any:
    return Field(
        default=None, description="Only requests under this path (like /api) reach this app."
    )


def strip_field() -> Any:
    return Field(
        default=None,
        description="Relay /api/x as /x (true) or as /api/x (false, the default).",
    )


class Routing(Protocol):
    """The keys as `Service` and `Environment` both have them (last in each, for messages)."""

    @property
    def domains(self) -> list[str] | None: ...
    @property
    def path_prefix(self) -> str | None: ...
    @property
    def strip_prefix(self) -> bool | None: ...
    @property
    def tls(self) -> str | Tls | None: ...
    @property
    def redirect_http(self) -> bool | None: ...


class HostRouting(NamedTuple):
    """What one environment's hosts route to the app (no domains: its own port)."""

    domains: tuple[str, ...] = ()
    path_prefix: str = ""
    strip_prefix: bool = False
    tls: Tls | None = None
    redirect_http: bool = False


def effective_routing(service: Routing | None, environment: Routing | None) -> HostRouting:
    """The environment's keys over the service's."""
    sections = [s for s in (environment, service) if s is not None]
    domains = next((s.domains for s in sections if s.domains is not None), None)
    prefix = next((s.path_prefix for s in sections if s.path_prefix is not None), None)
    strip = next((s.strip_prefix for s in sections if s.strip_prefix is not None), None)
    tls = as_tls(next((s.tls for s in sections if s.tls is not None), None))
    redirect = next((s.redirect_http for s in sections if s.redirect_http is not None), None)
    return HostRouting(
        tuple(domains or ()),
        prefix or "",
        bool(strip),
        tls,
        tls is not None and redirect is not False,
    )
