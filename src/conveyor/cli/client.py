"""The CLI's options for the API client: server and token from options or the environment."""

from __future__ import annotations

from typing import Annotated

import typer

# the HTTP layer and the typed client live in conveyor.client; the CLI's names stay here
from conveyor.client import (
    DEFAULT_SERVER,
    MAX_RETRY_AFTER,
    RETRIES,
    Client,
    _retry_after,
    err,
    fail,
)

__all__ = [
    "DEFAULT_SERVER",
    "MAX_RETRY_AFTER",
    "RETRIES",
    "CaOpt",
    "Client",
    "JsonOpt",
    "ServerOpt",
    "TokenOpt",
    "_retry_after",
    "err",
    "fail",
]

ServerOpt = Annotated[
    str,
    typer.Option("--server", envvar="CONVEYOR_SERVER", help="Server URL.", show_default=True),
]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="CONVEYOR_TOKEN", help="API token.", show_default=False),
]
CaOpt = Annotated[
    str | None,
    typer.Option(
        "--ca",
        envvar="CONVEYOR_CA",
        metavar="FILE",
        help="Trust only this CA (PEM) for an https:// server.",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON alone on stdout.")]
