"""`conveyor service install server|agent`: write (or print) a systemd unit."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from conveyor.client import fail
from conveyor.systemd.units import AGENT_UNIT, SERVER_UNIT, agent_unit, server_unit

service_cli = typer.Typer(help="systemd units for the server and the agents.", no_args_is_help=True)
install_cli = typer.Typer(
    help="Write a systemd unit (prints it; --print only prints).", no_args_is_help=True
)
service_cli.add_typer(install_cli, name="install")

UNIT_DIR = Path("/etc/systemd/system")
UnitDirOpt = Annotated[Path, typer.Option(help="Where to write the unit.")]
PrintOpt = Annotated[bool, typer.Option("--print", help="Print the unit only; write nothing.")]
ExecOpt = Annotated[
    str | None,
    typer.Option("--exec", help="The conveyor command the unit runs (default: this one)."),
]


def conveyor_command(given: str | None) -> list[str]:
    """The absolute command that runs this conveyor: what the unit's ExecStart starts."""
    if given:
        return [os.path.abspath(given)]
    invoked = Path(sys.argv[0])
    if invoked.name == "conveyor" and invoked.exists():
        return [os.path.abspath(invoked)]
    found = shutil.which("conveyor")
    if found:
        return [os.path.abspath(found)]
    return [sys.executable, "-m", "conveyor"]


def _emit(text: str, unit_dir: Path, name: str, only_print: bool, next_steps: list[str]) -> None:
    if only_print:
        sys.stdout.write(text)
        return
    target = unit_dir / name
    try:
        unit_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(target)
    except PermissionError:
        fail(
            escape(
                f"cannot write {target}: permission denied. Run it as root "
                f"(sudo conveyor service install …), or use --print and install the unit "
                "yourself (or --unit-dir elsewhere)"
            ),
            1,
        )
    except OSError as exc:
        fail(escape(f"cannot write {target}: {exc.strerror or exc}"), 1)
    sys.stdout.write(f"wrote {target}:\n\n{text}\nnext:\n")
    for step in next_steps:
        sys.stdout.write(f"  {step}\n")
    sys.stdout.flush()


def _user_missing(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return True
    return False


def _shebang(program: Path) -> Path | None:
    try:
        with open(program, "rb") as fh:
            first = fh.readline(4096)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    return Path(words[0]) if words and words[0].startswith("/") else None


def out_of_reach(command: list[str], user: str) -> str | None:
    """Why `user` cannot run the unit's command (a directory it cannot enter on the way
    to it, or to where its symlink points), or None."""
    from conveyor.agent.confine import can_enter, resolve_user
    from conveyor.agent.errors import StartError

    try:
        run_as = resolve_user(user)
    except StartError:
        return None  # a user yet to be made, or root: nothing to check
    program = Path(command[0])
    paths = [program, program.resolve()]
    interpreter = _shebang(program)
    if interpreter is not None:  # a pipx or uv tool script: its venv's python, too
        paths += [interpreter, interpreter.resolve()]
    for path in dict.fromkeys(paths):
        blocked = can_enter(path.parent, run_as)
        if blocked is not None:
            return (
                f"{user} cannot run {program}: it cannot enter {blocked}. Install conveyor "
                "where every user can run it: `pipx install --global 'conveyor[server]'`, or "
                "`UV_TOOL_DIR=/opt/conveyor UV_TOOL_BIN_DIR=/usr/local/bin uv tool install "
                "--python /usr/bin/python3 'conveyor[server]'`, then write the unit again"
            )
    return None


@install_cli.command("server")
def install_server(
    data: Annotated[Path, typer.Option(help="The server's data directory.")] = Path(
        "/var/lib/conveyor"
    ),
    listen: Annotated[str, typer.Option(help="ADDR:PORT to listen on.")] = "0.0.0.0:8420",
    url: Annotated[str | None, typer.Option(help="Public URL, for webhook URLs.")] = None,
    user: Annotated[str, typer.Option(help="The unprivileged user it runs as.")] = "conveyor",
    env_file: Annotated[
        Path, typer.Option(help="Optional settings: CONVEYOR_THREADS=…, CONVEYOR_ADMIN_TOKEN=…")
    ] = Path("/etc/conveyor/server.env"),
    exec_path: ExecOpt = None,
    unit_dir: UnitDirOpt = UNIT_DIR,
    only_print: PrintOpt = False,
) -> None:
    """conveyor-server.service: the server as an unprivileged user, restarted on failure."""
    if user == "root":
        fail("--user root: the server runs test and build steps; give it a user of its own", 2)
    command = conveyor_command(exec_path)
    text = server_unit(
        command,
        data=data.absolute(),
        listen=listen,
        url=url,
        user=user,
        env_file=env_file,
    )
    steps = []
    unreachable = out_of_reach(command, user)
    if unreachable:
        steps.append(f"# warning: {unreachable}")
    if _user_missing(user):
        steps.append(
            f"useradd --system --home {data.absolute()} --shell /usr/sbin/nologin {user}"
            "   # the user does not exist yet"
        )
    steps += [
        "systemctl daemon-reload && systemctl enable --now conveyor-server",
        "journalctl -u conveyor-server | grep 'admin token'   # shown once, at the first start",
    ]
    _emit(text, unit_dir, SERVER_UNIT, only_print, steps)


@install_cli.command("agent")
def install_agent(
    server: Annotated[str, typer.Option(envvar="CONVEYOR_SERVER", help="The server's URL.")],
    name: Annotated[
        str | None,
        typer.Option(help="This host's name, as in `conveyor host add` (default: hostname)."),
    ] = None,
    data: Annotated[Path, typer.Option(help="The agent's data directory.")] = Path(
        "/var/lib/conveyor-agent"
    ),
    router: Annotated[str, typer.Option(help="embedded or haproxy.")] = "embedded",
    bind: Annotated[str, typer.Option(help="Address the router listens on.")] = "0.0.0.0",
    metrics: Annotated[
        str | None, typer.Option(metavar="ADDR:PORT", help="The agent's --metrics.")
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option(help="A file holding the enrolment token (else the env file).")
    ] = None,
    env_file: Annotated[
        Path, typer.Option(help="Holds CONVEYOR_TOKEN=… until the agent has enrolled.")
    ] = Path("/etc/conveyor/agent.env"),
    user: Annotated[
        str, typer.Option(help="Root, so that instances can run as their service.user.")
    ] = "root",
    exec_path: ExecOpt = None,
    unit_dir: UnitDirOpt = UNIT_DIR,
    only_print: PrintOpt = False,
) -> None:
    """conveyor-agent.service: the agent, restarted on failure; its instances outlive it."""
    if router not in ("embedded", "haproxy"):
        fail(f"--router {router!r}: expected embedded or haproxy", 2)
    host = name or socket.gethostname().split(".")[0]
    text = agent_unit(
        conveyor_command(exec_path),
        server=server,
        name=host,
        data=data.absolute(),
        router=router,
        bind=bind,
        metrics=metrics,
        token_file=token_file.absolute() if token_file else None,
        user=user,
        env_file=env_file,
    )
    where = token_file or env_file
    steps = [
        f"conveyor host add {host}   # on the server side: prints the enrolment token",
        f"install -m 600 /dev/null {where}   # then put the token in it"
        + ("" if token_file else " as CONVEYOR_TOKEN=cvy_…"),
        "systemctl daemon-reload && systemctl enable --now conveyor-agent",
    ]
    _emit(text, unit_dir, AGENT_UNIT, only_print, steps)


__all__ = ["service_cli"]
