"""The text of conveyor's systemd units (pure: options in, unit file out)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from conveyor import __version__

SERVER_UNIT = "conveyor-server.service"
AGENT_UNIT = "conveyor-agent.service"
# the agent's exit code when the server refuses its version (conveyor.agent.main)
EXIT_VERSION_REFUSED = 3
_PLAIN = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")


def quote(arg: str) -> str:
    """One ExecStart word as systemd reads it: `%` and `$` doubled, quoted if needed."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if _PLAIN.match(arg):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def state_directory(data: Path) -> str | None:
    """StateDirectory= for a data directory under /var/lib (systemd then creates it,
    owned by the unit's user, 0700), else None."""
    try:
        relative = data.relative_to("/var/lib")
    except ValueError:
        return None
    return str(relative) if str(relative) not in ("", ".") else None


@dataclass
class Unit:
    """A unit file: its sections' lines, in order."""

    description: str
    exec_start: list[str]
    service: list[str] = field(default_factory=list)

    def render(self, written_by: str) -> str:
        lines = [
            f"# {written_by} (conveyor {__version__}); edit it or write it again",
            "[Unit]",
            f"Description={self.description}",
            "After=network-online.target",
            "Wants=network-online.target",
            "",
            "[Service]",
            "Type=simple",
            "ExecStart=" + " ".join(quote(a) for a in self.exec_start),
            *self.service,
            "",
            "[Install]",
            "WantedBy=multi-user.target",
        ]
        return "\n".join(lines) + "\n"


def server_unit(
    conveyor: list[str], *, data: Path, listen: str, url: str | None, user: str, env_file: Path
) -> str:
    """conveyor-server.service: as an unprivileged user, its data directory 0700."""
    args = [*conveyor, "server", "--data", str(data), "--listen", listen]
    if url:
        args += ["--url", url]
    service = [
        f"User={user}",
        "UMask=0077",
        f"EnvironmentFile=-{env_file}",
        "Restart=on-failure",
        "RestartSec=5",
        "TimeoutStopSec=30",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectSystem=full",
    ]
    state = state_directory(data)
    if state:
        service += [f"StateDirectory={state}", "StateDirectoryMode=0700"]
    return Unit("conveyor server (continuous deployment)", args, service).render(
        "written by `conveyor service install server`"
    )


def agent_unit(
    conveyor: list[str],
    *,
    server: str,
    name: str,
    data: Path,
    router: str,
    bind: str,
    metrics: str | None,
    token_file: Path | None,
    user: str,
    env_file: Path,
) -> str:
    """conveyor-agent.service: restarting it leaves the router and instances running."""
    args = [*conveyor, "agent", "--server", server, "--name", name, "--data", str(data)]
    args += ["--router", router, "--bind", bind]
    if metrics:
        args += ["--metrics", metrics]
    if token_file is not None:
        args += ["--token-file", str(token_file)]
    service = [] if user == "root" else [f"User={user}"]
    service += [
        "# the enrolment token: CONVEYOR_TOKEN=… (0600; not needed once enrolled)",
        f"EnvironmentFile=-{env_file}",
        "Restart=on-failure",
        "RestartSec=5",
        "# refused by the server for its version: restarting it cannot help",
        f"RestartPreventExitStatus={EXIT_VERSION_REFUSED}",
        "# stop or restart the agent only: its router and the apps' instances keep serving",
        "KillMode=process",
        "TimeoutStopSec=30",
    ]
    state = state_directory(data)
    if state:
        service += [f"StateDirectory={state}"]
    return Unit(f"conveyor agent {name}", args, service).render(
        "written by `conveyor service install agent`"
    )


__all__ = ["AGENT_UNIT", "SERVER_UNIT", "agent_unit", "quote", "server_unit", "state_directory"]
