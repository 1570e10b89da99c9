"""`conveyor`: the command line's entry point.

The client commands (thin clients of the HTTP API) live in conveyor.cli; the process
launchers are here: `server`, `agent`, `runner`, `router` and `demo`. Each imports its process
only when it runs, so that an agent host (installed without the server's extra) can run
`conveyor agent` and the client commands.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from conveyor.cli.client import fail
from conveyor.cli.main import app
from conveyor.systemd.command import service_cli

if TYPE_CHECKING:
    from conveyor.tls import ServerTrust

__all__ = ["app", "main"]

app.add_typer(service_cli, name="service")

SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


def main() -> None:
    """The `conveyor` command.

    `--show-completion` and `--install-completion` detect the shell they run in; named
    (`--show-completion bash`), they take that shell instead, which Typer does when its
    shell detection is off.
    """
    args = sys.argv[1:]
    for flag in ("--show-completion", "--install-completion"):
        named = args[args.index(flag) + 1 :][:1] if flag in args else []
        if named and named[0] in SHELLS:
            os.environ["_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION"] = "1"
    app()


# What `conveyor server` imports beyond an agent host's install (the `server` extra).
SERVER_MODULES = ("fastapi", "sqlalchemy", "alembic", "uvicorn", "jinja2", "scipy", "apprise")


def _needs_server_extra(command: str) -> None:
    """Stop with what to install when this install has the agent and the client only."""
    missing = [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        fail(
            f"conveyor {command}: {', '.join(missing)} not installed: this install has the "
            "agent and the client commands only; install the server with "
            + escape("`pip install 'conveyor[server]'`"),
            2,
        )


def _launcher(after: str, name: str | None = None) -> Callable[[Callable[..., Any]], Any]:
    """Register a command right after the command `after`: `conveyor --help` lists them
    in the order they had when they lived among the client commands."""

    def register(fn: Callable[..., Any]) -> Any:
        app.command(name)(fn)
        info = app.registered_commands.pop()
        names = [
            c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands
        ]
        app.registered_commands.insert(names.index(after) + 1, info)
        return fn

    return register


@_launcher(after="init")
def server(
    data: Annotated[Path, typer.Option(help="Data directory.")] = Path(".conveyor"),
    listen: Annotated[str, typer.Option(help="ADDR:PORT to listen on.")] = "127.0.0.1:8420",
    db: Annotated[
        str | None,
        typer.Option(help="SQLite path or postgresql:// URL (default: DATA/conveyor.db)."),
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="Public URL of this server, for webhook URLs.")
    ] = None,
    threads: Annotated[
        int,
        typer.Option(
            min=1, max=1000, envvar="CONVEYOR_THREADS", help="Requests served at once by threads."
        ),
    ] = 40,
    db_pool: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=1000,
            envvar="CONVEYOR_DB_POOL",
            help="Database connections for requests (default: threads + 12).",
        ),
    ] = None,
    db_wait: Annotated[
        float,
        typer.Option(
            min=0.1,
            max=300,
            envvar="CONVEYOR_DB_WAIT",
            help="Seconds a request waits for a connection or a lock before 503.",
        ),
    ] = 5.0,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            envvar="CONVEYOR_TLS_CERT",
            help="Serve HTTPS with this PEM certificate (its chain may follow it).",
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(envvar="CONVEYOR_TLS_KEY", help="The certificate's PEM private key."),
    ] = None,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            envvar="FORWARDED_ALLOW_IPS",
            help="Proxies whose X-Forwarded-Proto/-For are honoured: addresses or networks, "
            "comma-separated, or * (default: 127.0.0.1,::1).",
        ),
    ] = None,
) -> None:
    """Run the controller: API, webhooks, engine."""
    _needs_server_extra("server")
    from conveyor.server.serve import ServerTLS, serve
    from conveyor.tls import TrustError, check_server_certificate

    if not re.match(r"^(\[[0-9a-fA-F:]+\]|[^:]+):\d{1,5}$", listen):
        fail(f"--listen {listen!r}: expected ADDR:PORT, e.g. 127.0.0.1:8420", 2)
    tls = None
    if tls_cert is not None or tls_key is not None:
        if tls_cert is None or tls_key is None:
            fail("--tls-cert and --tls-key go together: give both, or neither", 2)
        try:
            tls = ServerTLS(tls_cert, tls_key, check_server_certificate(tls_cert, tls_key))
        except TrustError as exc:
            fail(escape(str(exc)), 1)
    serve(
        data,
        listen,
        db,
        url,
        threads=threads,
        db_pool=db_pool,
        db_wait=db_wait,
        tls=tls,
        forwarded_allow_ips=forwarded_allow_ips,
    )


@_launcher(after="hook-script")
def agent(
    server: Annotated[
        list[str],
        typer.Option(
            envvar="CONVEYOR_SERVER",
            help="Server URL; several servers sharing one database: repeat it or separate "
            "the URLs with commas (the agent moves to the next when one does not answer).",
        ),
    ],
    name: Annotated[str, typer.Option(help="This host's name, as in `conveyor host add`.")],
    token: Annotated[
        str | None,
        typer.Option(
            envvar="CONVEYOR_TOKEN",
            help="One-time enrolment token (seen in `ps`: prefer CONVEYOR_TOKEN, --token-file).",
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            envvar="CONVEYOR_TOKEN_FILE",
            help="Read the enrolment token from this file (first line).",
        ),
    ] = None,
    data: Annotated[Path, typer.Option(help="Data directory.")] = Path("/var/lib/conveyor-agent"),
    router: Annotated[str, typer.Option(help="embedded or haproxy.")] = "embedded",
    bind: Annotated[str, typer.Option(help="Address the router listens on.")] = "0.0.0.0",
    http_port: Annotated[
        int,
        typer.Option(
            envvar="CONVEYOR_HTTP_PORT",
            min=1,
            max=65535,
            help="The shared port where the router serves every app with domains (by Host header).",
        ),
    ] = 80,
    https_port: Annotated[
        int,
        typer.Option(
            envvar="CONVEYOR_HTTPS_PORT",
            min=1,
            max=65535,
            help="The shared port where the router serves the apps with tls over HTTPS (by SNI).",
        ),
    ] = 443,
    acme_ca: Annotated[
        Path | None,
        typer.Option(
            envvar="CONVEYOR_ACME_CA",
            help="Trust this CA bundle (PEM) for the ACME directory of `tls: acme` instead "
            "of the system's (a private ACME CA).",
        ),
    ] = None,
    router_workers: Annotated[
        int,
        typer.Option(
            envvar="CONVEYOR_ROUTER_WORKERS",
            help="Processes of the embedded router sharing each port (0: one per core).",
        ),
    ] = 1,
    metrics: Annotated[
        str | None,
        typer.Option(
            metavar="ADDR:PORT",
            help="Serve the router's counters for Prometheus on GET http://ADDR:PORT/metrics "
            "(labels app, release, host = --name). Off by default.",
        ),
    ] = None,
    ca: Annotated[
        Path | None,
        typer.Option(
            envvar="CONVEYOR_CA",
            help="Trust only this CA (PEM) for the https:// server, not the system's CAs.",
        ),
    ] = None,
    server_fingerprint: Annotated[
        str | None,
        typer.Option(
            envvar="CONVEYOR_SERVER_FINGERPRINT",
            metavar="sha256:HEX",
            help="Trust only the server certificate with this SHA-256 (printed by "
            "`conveyor server` and `conveyor host add`).",
        ),
    ] = None,
) -> None:
    """The agent on a host: dials out to the server and converges toward its desired state."""
    if router not in ("embedded", "haproxy"):
        fail(f"--router {router!r}: expected embedded or haproxy", 2)
    if http_port == https_port:
        fail(f"--http-port and --https-port are both {http_port}: expected two ports", 2)
    # once enrolled the agent needs the token no more: its file may have been deleted
    enrolled = (data / "credential.json").exists()
    if token_file is not None and (token_file.exists() or not enrolled):
        token = _read_token_file(token_file)
    from conveyor.agent.exporter import ExporterError, parse_address
    from conveyor.agent.main import run_agent

    if metrics is not None:
        try:
            parse_address(metrics)
        except ExporterError as exc:
            fail(str(exc), 2)
    trust, servers = _servers(server, ca, server_fingerprint)
    raise typer.Exit(
        run_agent(
            server=servers,
            name=name,
            token=token,
            data=data,
            router=router,
            bind=bind,
            metrics=metrics,
            trust=trust,
            router_workers=router_workers,
            http_port=http_port,
            https_port=https_port,
            acme_ca=str(acme_ca) if acme_ca else None,
        )
    )


def _servers(
    server: list[str], ca: Path | None, fingerprint: str | None
) -> tuple[ServerTrust, list[str]]:
    """--server (repeated or comma-separated URLs) and the trust they are reached with."""
    from conveyor.tls import ServerTrust, TrustError

    try:
        trust = ServerTrust.of(ca, fingerprint)
        servers = [url.strip() for value in server for url in value.split(",") if url.strip()]
        if not servers:
            fail("--server: give the URL of at least one server", 2)
        for url in servers:
            trust.check_url(url)
    except TrustError as exc:
        fail(escape(str(exc)), 2)
    return trust, servers


def _read_token_file(path: Path) -> str:
    """The enrolment token in a file (its first line), or stop saying what is wrong."""
    try:
        lines = path.read_text().strip().splitlines()
    except OSError as exc:
        fail(f"--token-file {path}: cannot read it ({exc.strerror or exc})", 2)
    if not lines or not lines[0].strip():
        fail(f"--token-file {path}: the file is empty; put the token of `conveyor host add`", 2)
    return lines[0].strip()


@_launcher(after="agent", name="runner")
def runner_cmd(
    server: Annotated[
        list[str],
        typer.Option(
            envvar="CONVEYOR_SERVER",
            help="Server URL; several servers sharing one database: repeat it or separate "
            "the URLs with commas (the runner moves to the next when one does not answer).",
        ),
    ],
    token: Annotated[
        str | None,
        typer.Option(
            envvar="CONVEYOR_TOKEN",
            help="An API token with the runner role (seen in `ps`: prefer CONVEYOR_TOKEN or "
            "--token-file).",
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(envvar="CONVEYOR_TOKEN_FILE", help="Read the token from this file."),
    ] = None,
    labels: Annotated[
        str, typer.Option(help="What this runner offers, comma-separated (linux,big).")
    ] = "",
    name: Annotated[
        str | None, typer.Option(help="This runner's name (default: the host name).")
    ] = None,
    work: Annotated[Path, typer.Option(help="Where runs are checked out and built.")] = Path(
        "/var/lib/conveyor-runner"
    ),
    bind: Annotated[
        str | None, typer.Option(help="The local address to connect to the server from.")
    ] = None,
    ca: Annotated[
        Path | None,
        typer.Option(
            envvar="CONVEYOR_CA",
            help="Trust only this CA (PEM) for the https:// server, not the system's CAs.",
        ),
    ] = None,
) -> None:
    """Run the test and build steps of runs on this machine (claimed from the server)."""
    import socket

    from conveyor.config.values import APP_NAME_PATTERN
    from conveyor.runner.main import run_runner

    if token_file is not None:
        token = _read_token_file(token_file)
    if not token:
        fail("no token: pass --token-file F (or CONVEYOR_TOKEN) with a runner token", 2)
    wanted = sorted({label.strip() for label in labels.split(",") if label.strip()})
    for label in wanted:
        if not re.fullmatch(APP_NAME_PATTERN, label):
            fail(f"--labels: {label!r} is not a label (lowercase letters, digits, dashes)", 2)
    runner_name = name or socket.gethostname()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", runner_name):
        fail(f"--name {runner_name!r}: letters, digits, '.', '_' and '-' only", 2)
    trust, servers = _servers(server, ca, None)
    verify: Any = trust.context() if trust.private else True
    raise typer.Exit(run_runner(servers, token, runner_name, wanted, work, verify, bind))


@_launcher(after="agent", name="router")
def router_cmd(
    socket: Annotated[Path, typer.Option(help="Unix socket of the admin interface.")],
    log_level: Annotated[str, typer.Option(help="debug, info, warning.")] = "info",
    workers: Annotated[
        int, typer.Option(help="Processes sharing each port (0: one per core).")
    ] = 1,
) -> None:
    """The embedded router process (the agent starts it; rarely run by hand)."""
    from conveyor.router.main import main as router_main

    argv = ["--socket", str(socket), "--log-level", log_level, "--workers", str(workers)]
    raise typer.Exit(router_main(argv))


@_launcher(after="history")
def demo(
    wait: Annotated[
        bool, typer.Option(help="Keep everything up until Ctrl-C (--no-wait: stop at once).")
    ] = True,
    listen: Annotated[str, typer.Option(help="ADDR:PORT for the demo server.")] = "127.0.0.1:8420",
) -> None:
    """The whole system on one machine: a server, three hosts, a sample app pushed twice."""
    _needs_server_extra("demo")
    from conveyor.demo import run_demo

    raise typer.Exit(run_demo(listen=listen, wait=wait))


@_launcher(after="server")
def backup(
    file: Annotated[Path, typer.Argument(help="The tar to write (0600: it holds the key file).")],
    data: Annotated[Path, typer.Option(help="The server's data directory.")] = Path(".conveyor"),
    db: Annotated[
        str | None,
        typer.Option(help="The server's --db, if it has one (default: DATA/conveyor.db)."),
    ] = None,
) -> None:
    """Back up the server's state while it runs: database, key file, artifacts, run logs."""
    _needs_server_extra("backup")
    from conveyor.server.backup import BackupError, take_backup

    try:
        manifest = take_backup(data, db, file)
    except BackupError as exc:
        fail(str(exc), 1)
    typer.echo(
        f"backup written to {file}: schema revision {manifest.schema_revision}, "
        f"{manifest.files} file(s) beside the database and the key file"
    )


@_launcher(after="backup")
def restore(
    file: Annotated[Path, typer.Argument(help="A tar written by `conveyor backup`.")],
    data: Annotated[Path, typer.Option(help="A new, empty data directory.")],
    db: Annotated[
        str | None,
        typer.Option(help="Where the database goes (default: DATA/conveyor.db)."),
    ] = None,
) -> None:
    """Restore a backup into a new data directory; then start `conveyor server --data` on it."""
    _needs_server_extra("restore")
    from conveyor.server.backup import BackupError, restore_backup

    try:
        manifest = restore_backup(file, data, db)
    except BackupError as exc:
        fail(str(exc), 2)
    typer.echo(
        f"restored into {data}: conveyor {manifest.conveyor_version}'s backup of "
        f"{manifest.created_at} (schema revision {manifest.schema_revision}); "
        f"start it with `conveyor server --data {data}`"
    )
