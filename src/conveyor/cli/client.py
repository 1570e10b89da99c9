"""The CLI's HTTP client: server and token from options or the environment, clear errors."""

from __future__ import annotations

import math
import time
from typing import Annotated, Any, NoReturn
from uuid import uuid4

import httpx
import typer
from rich.console import Console

DEFAULT_SERVER = "http://127.0.0.1:8420"
# seconds before each retry of a request sent with an Idempotency-Key (then it gives up)
RETRIES: list[float | None] = [0.5, 1.0, 2.0, 4.0, None]
MAX_RETRY_AFTER = 10.0
err = Console(stderr=True, highlight=False)

ServerOpt = Annotated[
    str,
    typer.Option("--server", envvar="CONVEYOR_SERVER", help="Server URL.", show_default=True),
]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="CONVEYOR_TOKEN", help="API token.", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON alone on stdout.")]


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


class Client:
    """A thin wrapper over httpx: every failure becomes a message and an exit code."""

    def __init__(self, server: str, token: str | None, timeout: float = 30.0) -> None:
        if not token:
            fail("no API token: pass --token or set CONVEYOR_TOKEN", 2)
        self.server = server.rstrip("/")
        self._http = httpx.Client(
            base_url=self.server,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    def request(
        self, method: str, path: str, *, once: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """One request; with `once`, sent with a fresh Idempotency-Key and retried with it
        when the server is unreachable, times out or is busy (503): never done twice."""
        tries = RETRIES if once else [None]
        if once:
            kwargs["headers"] = {**kwargs.get("headers", {}), "Idempotency-Key": str(uuid4())}
        for attempt, pause in enumerate(tries, 1):
            last = attempt == len(tries)
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if last or pause is None:
                    fail(f"cannot reach the conveyor server at {self.server}: {exc}")
                time.sleep(pause)
                continue
            if response.status_code == 503 and not last and pause is not None:
                time.sleep(_retry_after(response, pause))
                continue
            break
        if response.status_code >= 400:
            detail = _detail(response)
            # 4xx: the request was wrong (bad input, unknown name, no right): usage, exit 2
            fail(f"{detail} (HTTP {response.status_code})", 2 if response.status_code < 500 else 1)
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post(self, path: str, body: Any = None, *, once: bool = False) -> Any:
        """POST; `once` for what must not happen twice (deploy, rollback, approve, run)."""
        payload = body if body is not None else {}
        return self.request("POST", path, once=once, json=payload).json()

    def put(self, path: str, body: Any) -> None:
        self.request("PUT", path, json=body)

    def text(self, path: str) -> str:
        return self.request("GET", path).text


def _retry_after(response: httpx.Response, default: float) -> float:
    """The server's Retry-After in seconds (bounded), or our own pause."""
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except ValueError:  # absent, or an HTTP date: our own pause
        return default
    return default if math.isnan(seconds) else min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, list):  # FastAPI validation errors
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}" for d in detail
        )
    return str(detail)
