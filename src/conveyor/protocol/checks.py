"""Infrastructure checks: what the server asks a host's agent to check before a deployment
moves traffic, and what the agent found."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .wire import Wire

CheckKind = Literal["tcp", "tls", "disk", "mount", "command"]


class InfraCheck(Wire):
    """One check, as the agent runs it."""

    kind: CheckKind
    target: str = Field(
        max_length=4096,
        description="tcp: host:port; tls: the host name; disk and mount: a path; command: "
        "a shell command",
    )
    port: int = Field(default=443, ge=1, le=65535, description="tls: the port")
    min_days: int = Field(default=14, ge=0, description="tls: days the certificate has left")
    min_free: float = Field(default=0.1, ge=0, le=1, description="disk: fraction free")
    timeout: float = Field(default=10.0, gt=0, le=3600)

    def label(self) -> str:
        """How the check is named in results and errors, e.g. `mount /data`."""
        if self.kind == "tls":
            return f"tls {self.target}:{self.port} (at least {self.min_days} days left)"
        if self.kind == "disk":
            return f"disk {self.target} (at least {self.min_free * 100:g}% free)"
        return f"{self.kind} {self.target}"


class ChecksRequest(Wire):
    """Run these checks once, under this id (one per deployment)."""

    id: str = Field(max_length=100, description="e.g. 'checks-12'; the agent runs each id once")
    app: str
    environment: str = ""
    checks: list[InfraCheck]


class CheckOutcome(Wire):
    check: str = Field(description="the check's label")
    ok: bool
    detail: str = Field(default="", max_length=2000)


class ChecksResult(Wire):
    id: str
    state: Literal["running", "passed", "failed"]
    outcomes: list[CheckOutcome] = []
