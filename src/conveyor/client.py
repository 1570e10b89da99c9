"""The typed client of conveyor's HTTP API, over the wire models of conveyor.protocol.

One place that knows the API's paths and answers: the CLI, the demo and the benches
read typed models from it (`status() -> list[AppStatus]`, `deploy(...) ->
DeploymentOut`), so a field renamed in conveyor.protocol breaks the type check, not a user's
script. Under the typed methods, the HTTP layer: server and token, requests sent with an
Idempotency-Key and retried with it, every failure a message on stderr and an exit code.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, NoReturn, TypeVar
from uuid import uuid4

import httpx
import typer
from pydantic import BaseModel, TypeAdapter
from rich.console import Console
from rich.markup import escape

from conveyor.protocol import (
    AppCreated,
    AppOut,
    AppStatus,
    DeploymentOut,
    DoraReport,
    EnvironmentStatus,
    HostCreated,
    HostOut,
    KeyRotated,
    LogChunk,
    RunOut,
    SecretOut,
    TokenCreated,
    TokenOut,
)
from conveyor.protocol.flags import (
    FlagChange,
    FlagDetail,
    FlagOut,
    FlagTokenCreated,
    GuardedRolloutStart,
)
from conveyor.tls import ServerTrust, TrustError

DEFAULT_SERVER = "http://127.0.0.1:8420"
# seconds before each retry of a request sent with an Idempotency-Key (then it gives up)
RETRIES: list[float | None] = [0.5, 1.0, 2.0, 4.0, None]
MAX_RETRY_AFTER = 10.0
err = Console(stderr=True, highlight=False)
M = TypeVar("M", bound=BaseModel)


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


class Client:
    """The API over httpx: typed methods, and under them get/post/request, where every
    failure becomes a message and an exit code."""

    def __init__(
        self,
        server: str,
        token: str | None,
        ca: str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        """`ca`: trust only this CA for an https:// server (default: $CONVEYOR_CA, else
        the system's CAs)."""
        if not token:
            fail("no API token: pass --token or set CONVEYOR_TOKEN", 2)
        self.server = server.rstrip("/")
        try:
            self.trust = ServerTrust.of(ca or os.environ.get("CONVEYOR_CA") or None)
            self.trust.check_url(self.server)
        except TrustError as exc:
            fail(escape(str(exc)), 2)
        self._http = httpx.Client(
            base_url=self.server,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            verify=self.trust.context(),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
                refused = self.trust.explain(exc)
                if refused:  # a certificate refused now is refused on every retry
                    fail(escape(f"{self.server}: {refused}"))
                if last or pause is None:
                    fail(escape(f"cannot reach the conveyor server at {self.server}: {exc}"))
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

    # -- typed: the API's answers as protocol models ------------------------------

    def _typed(self, model: type[M], data: Any) -> M:
        return model.model_validate(data)

    def _typed_list(self, model: type[M], data: Any) -> list[M]:
        return TypeAdapter(list[model]).validate_python(data)  # type: ignore[valid-type]

    def apps(self) -> list[AppOut]:
        return self._typed_list(AppOut, self.get("/api/apps"))

    def add_app(self, body: dict[str, Any]) -> AppCreated:
        return self._typed(AppCreated, self.post("/api/apps", body))

    def update_app(self, name: str, changes: dict[str, Any]) -> AppOut:
        return self._typed(AppOut, self.request("PATCH", f"/api/apps/{name}", json=changes).json())

    def remove_app(self, name: str, *, force: bool) -> None:
        self.request("DELETE", f"/api/apps/{name}", params={"force": force})

    def webhook(self, app: str) -> AppCreated:
        """The app's webhook URLs and secret (admin)."""
        return self._typed(AppCreated, self.get(f"/api/apps/{app}/webhook"))

    def hook_script(self, app: str) -> str:
        return self.text(f"/api/apps/{app}/hook-script")

    def hosts(self) -> list[HostOut]:
        return self._typed_list(HostOut, self.get("/api/hosts"))

    def add_host(self, name: str) -> HostCreated:
        return self._typed(HostCreated, self.post("/api/hosts", {"name": name}))

    def host(self, name: str) -> HostOut:
        return self._typed(HostOut, self.get(f"/api/hosts/{name}"))

    def remove_host(self, name: str) -> None:
        self.request("DELETE", f"/api/hosts/{name}")

    def tokens(self) -> list[TokenOut]:
        return self._typed_list(TokenOut, self.get("/api/tokens"))

    def create_token(self, name: str, role: str) -> TokenCreated:
        return self._typed(TokenCreated, self.post("/api/tokens", {"name": name, "role": role}))

    def revoke_token(self, token_id: int) -> None:
        self.request("DELETE", f"/api/tokens/{token_id}")

    def secrets(self, app: str) -> list[SecretOut]:
        return self._typed_list(SecretOut, self.get(f"/api/apps/{app}/secrets"))

    def set_secret(
        self,
        app: str,
        name: str,
        value: str | None = None,
        *,
        environment: str | None = None,
        command: str | None = None,
    ) -> None:
        """Set a value, or a command the server runs at deployment (for one environment)."""
        body = {"command": command} if command is not None else {"value": value}
        params = {"environment": environment} if environment else {}
        self.request("PUT", f"/api/apps/{app}/secrets/{name}", json=body, params=params)

    def delete_secret(self, app: str, name: str, *, environment: str | None = None) -> None:
        params = {"environment": environment} if environment else {}
        self.request("DELETE", f"/api/apps/{app}/secrets/{name}", params=params)

    def rotate_key(self) -> KeyRotated:
        return self._typed(KeyRotated, self.post("/api/secrets/rotate-key"))

    def start_run(self, app: str, sha: str | None) -> RunOut:
        return self._typed(RunOut, self.post(f"/api/apps/{app}/runs", {"sha": sha}, once=True))

    def run(self, run_id: int) -> RunOut:
        return self._typed(RunOut, self.get(f"/api/runs/{run_id}"))

    def run_logs(self, run_id: int) -> list[LogChunk]:
        return self._typed_list(LogChunk, self.get(f"/api/runs/{run_id}/logs"))

    def step_log(self, step_id: int, offset: int = 0) -> LogChunk:
        """A step's log from `offset` (bytes) on, as far as the server sends at once."""
        return self._typed(
            LogChunk, self.get(f"/api/steps/{step_id}/log", params={"offset": offset})
        )

    def status(self, app: str | None = None) -> list[AppStatus]:
        params = {"app": app} if app else None
        return self._typed_list(AppStatus, self.get("/api/status", params=params))

    def runs(self, app: str, limit: int) -> list[RunOut]:
        return self._typed_list(RunOut, self.get("/api/runs", params={"app": app, "limit": limit}))

    def deployments(self, app: str, env: str | None, limit: int) -> list[DeploymentOut]:
        params: dict[str, str | int] = {"app": app, "limit": limit}
        if env is not None:
            params["environment"] = env
        return self._typed_list(DeploymentOut, self.get("/api/deployments", params=params))

    def environments(self, app: str) -> list[EnvironmentStatus]:
        """The app's promotion chain in order, each environment with its hosts and deployments."""
        return self._typed_list(EnvironmentStatus, self.get(f"/api/apps/{app}/environments"))

    def dora(self, app: str, days: float) -> DoraReport:
        return self._typed(DoraReport, self.get(f"/api/apps/{app}/dora", params={"days": days}))

    def deployment(self, deployment_id: int) -> DeploymentOut:
        return self._typed(DeploymentOut, self.get(f"/api/deployments/{deployment_id}"))

    def deploy(self, app: str, env: str, body: dict[str, Any]) -> DeploymentOut:
        path = f"/api/apps/{app}/environments/{env}/deploy"
        return self._typed(DeploymentOut, self.post(path, body, once=True))

    def rollback(self, app: str, env: str, to: str | None) -> DeploymentOut:
        path = f"/api/apps/{app}/environments/{env}/rollback"
        return self._typed(DeploymentOut, self.post(path, {"to": to}, once=True))

    def approve(self, run_id: int) -> list[DeploymentOut]:
        return self._typed_list(DeploymentOut, self.post(f"/api/runs/{run_id}/approve", once=True))

    def abort_deployment(self, deployment_id: int) -> DeploymentOut:
        return self._typed(DeploymentOut, self.post(f"/api/deployments/{deployment_id}/abort"))

    def abort_run(self, run_id: int) -> RunOut:
        return self._typed(RunOut, self.post(f"/api/runs/{run_id}/abort"))

    def control(self, app: str, env: str, action: str, query: str = "") -> DeploymentOut:
        """promote, pause or resume the running canary step (query: "?full=true")."""
        path = f"/api/apps/{app}/environments/{env}/{action}{query}"
        return self._typed(DeploymentOut, self.post(path))

    # -- feature flags ------------------------------------------------------------------

    def _flags_path(self, app: str, env: str) -> str:
        return f"/api/apps/{app}/environments/{env}/flags"

    def flags(self, app: str, env: str) -> list[FlagOut]:
        return self._typed_list(FlagOut, self.get(self._flags_path(app, env)))

    def flag(self, app: str, env: str, name: str) -> FlagDetail:
        return self._typed(FlagDetail, self.get(f"{self._flags_path(app, env)}/{name}"))

    def change_flag(self, app: str, env: str, name: str, change: FlagChange) -> FlagDetail:
        body = change.model_dump(mode="json", exclude_none=True)
        path = f"{self._flags_path(app, env)}/{name}"
        return self._typed(FlagDetail, self.request("PATCH", path, json=body).json())

    def start_guarded_rollout(
        self, app: str, env: str, name: str, start: GuardedRolloutStart
    ) -> FlagDetail:
        path = f"{self._flags_path(app, env)}/{name}/rollout"
        return self._typed(FlagDetail, self.post(path, start.model_dump(mode="json")))

    def create_flag_token(self, app: str, env: str, name: str) -> FlagTokenCreated:
        path = f"/api/apps/{app}/environments/{env}/flag-tokens"
        return self._typed(FlagTokenCreated, self.post(path, {"name": name}))


def wire(data: BaseModel | list[Any]) -> Any:
    """A model (or a list of them) as the JSON the server sent: the same model's fields,
    in its order, as the server's response_model wrote them."""
    if isinstance(data, list):
        return [wire(item) for item in data]
    return data.model_dump(mode="json") if isinstance(data, BaseModel) else data


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
