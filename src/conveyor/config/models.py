"""The conveyor.yml models: what an app declares about testing, building and deploying."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    GetJsonSchemaHandler,
    Strict,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from conveyor.config.base import KEY, Loc, Section, describe, invalid
from conveyor.config.confinement import Limits, UserName
from conveyor.config.durations import Duration, PositiveDuration
from conveyor.config.environment import Environment
from conveyor.config.flags import Flags
from conveyor.config.migrations import Migrations
from conveyor.config.routing import (
    Domains,
    HostRouting,
    PathPrefix,
    domains_field,
    effective_routing,
    prefix_field,
    strip_field,
)
from conveyor.config.secrets import SecretEntry, entry_name
from conveyor.config.tls import TlsSetting, redirect_field, tls_field
from conveyor.config.values import (
    AppName,
    EnvironmentName,
    EnvMap,
    NonEmptyStr,
    Port,
    RunnerLabel,
    StepName,
)

MAX_KEEP_WARM_RELEASES = 10  # each warm release is a running instance on every host
NotifyEvent = Literal["failure", "rollback", "approval", "success", "announce"]


def _shorthand_schema(
    handler: GetJsonSchemaHandler, schema: CoreSchema, key: str, description: str
) -> JsonSchemaValue:
    full = handler.resolve_ref_schema(handler(schema))
    short = {"type": "string", "minLength": 1, "description": description}
    return {"anyOf": [short, full], "description": f"{description}, or a mapping with {key}."}


class Step(Section):
    """A command of the test or build stage, run in the checkout of one commit."""

    run: NonEmptyStr
    timeout: PositiveDuration = 600.0
    name: StepName | None = None
    env: EnvMap = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"run": data}
        if not isinstance(data, dict | Step):
            raise ValueError(
                "expected a command, or a mapping with run: (and optionally timeout, name, "
                f"env), got {describe(data)}"
            )
        return data

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return _shorthand_schema(handler, schema, "run", "A shell command")


def _inside_tree(path: str) -> str:
    parts = path.replace("\\", "/").split("/")
    if path.startswith("/") or ".." in parts:
        raise ValueError(
            f"expected a path inside the repository (relative, without ..), got {describe(path)}"
        )
    return path


TreePath = Annotated[str, AfterValidator(_inside_tree), WithJsonSchema({"type": "string"})]


class Artifact(Section):
    """Which files of the checkout, after the build, make up the release."""

    include: list[TreePath] = Field(default_factory=lambda: ["."])
    exclude: list[TreePath] = Field(default_factory=list)

    @field_validator("include")
    @classmethod
    def _includes_something(cls, include: list[str]) -> list[str]:
        if not include:
            raise invalid([((), 'expected at least one path, like ["."]', include)])
        return include


def _url_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"expected a path starting with '/', like /healthz, got {describe(value)}")
    return value


UrlPath = Annotated[str, AfterValidator(_url_path), WithJsonSchema({"type": "string"})]


class HealthCheck(Section):
    """How the router tells that an instance is ready: GET path, any 2xx is healthy."""

    path: UrlPath = "/healthz"
    interval: PositiveDuration = 1.0
    timeout: PositiveDuration = 30.0

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"path": data}
        if not isinstance(data, dict | HealthCheck):
            raise ValueError(
                "expected a path like /healthz, or a mapping with path, interval and timeout, "
                f"got {describe(data)}"
            )
        return data

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return _shorthand_schema(handler, schema, "path", "A path like /healthz")


class Service(Section):
    """How a release runs on a host, from its release directory (domains: see routing.py)."""

    start: NonEmptyStr
    port: Port
    health: HealthCheck = HealthCheck()
    drain: Duration = 30.0
    keep_warm: Duration = 600.0
    keep_warm_releases: Annotated[
        int,
        Strict(),
        Field(
            ge=0,
            le=MAX_KEEP_WARM_RELEASES,
            description="How many previous releases stay running, each for keep_warm: those "
            "that were the current release most recently. Older ones stop once drained; 0 "
            "keeps none.",
        ),
    ] = 1
    env: EnvMap = Field(default_factory=dict)
    secrets: list[SecretEntry] = Field(default_factory=list)
    user: UserName | None = Field(
        default=None,
        description="The unprivileged user instances run as on each host (the agent runs as "
        "root to switch to it); unset: the agent's own user.",
    )
    limits: Limits = Limits()
    domains: Domains = domains_field()
    path_prefix: PathPrefix | None = prefix_field()
    strip_prefix: bool | None = strip_field()
    tls: TlsSetting | None = tls_field()
    redirect_http: bool | None = redirect_field()

    @property
    def secret_names(self) -> list[str]:
        return [entry_name(e) for e in self.secrets]

    @property
    def secret_commands(self) -> dict[str, str]:
        """The secrets conveyor.yml gives a command for: name -> command."""
        return {k: v.command for e in self.secrets if isinstance(e, dict) for k, v in e.items()}

    @model_validator(mode="after")
    def _secrets_are_distinct(self) -> Service:
        problems: list[tuple[Loc, str, object]] = []
        seen: set[str] = set()
        for i, name in enumerate(self.secret_names):
            if name in seen:
                problems.append((("secrets", i), f"secret {name!r} is listed twice", name))
            elif name in self.env:
                message = f"{name!r} is both in env and in secrets; expected it in only one"
                problems.append((("secrets", i), message, name))
            seen.add(name)
        if problems:
            raise invalid(problems)
        return self


class Hooks(Section):
    """Commands run on the host, in the release directory; a non-zero exit fails the deploy."""

    install: NonEmptyStr | None = None
    migrate: NonEmptyStr | None = None


def _apprise_url(value: str) -> str:
    if "://" not in value:
        raise ValueError(
            "expected an Apprise URL like slack://..., json://host/path or mailto://..., "
            f"got {describe(value)}"
        )
    return value


def _default_events() -> list[NotifyEvent]:
    return ["failure", "rollback"]


class Notify(Section):
    """A notification target (any Apprise URL) and the events it wants."""

    url: Annotated[str, AfterValidator(_apprise_url), WithJsonSchema({"type": "string"})]
    on: list[NotifyEvent] = Field(default_factory=_default_events)

    @field_validator("on")
    @classmethod
    def _some_event(cls, on: list[str]) -> list[str]:
        if not on:
            raise invalid(
                [
                    (
                        (),
                        "expected at least one of failure, rollback, approval, success, announce",
                        on,
                    )
                ]
            )
        return on


class Config(Section):
    """A whole conveyor.yml."""

    app: AppName
    branch: NonEmptyStr = "main"
    test: list[Step] = Field(default_factory=list)
    build: list[Step] = Field(default_factory=list)
    artifact: Artifact = Artifact()
    service: Service | None = None
    hooks: Hooks = Hooks()
    migrations: Migrations = Migrations()
    # Insertion order is the promotion order.
    environments: dict[EnvironmentName, Environment] = Field(default_factory=dict)
    notify: list[Notify] = Field(default_factory=list)
    flags: Flags = Flags()
    # the test and build steps (the whole run: one checkout) go to a `conveyor runner`
    # holding every one of these labels; none: a runner if one is up, else the server
    runs_on: list[RunnerLabel] = Field(default_factory=list, max_length=20)

    @property
    def expand_command(self) -> str | None:
        """The migration run before traffic moves: migrations.expand, or hooks.migrate."""
        return self.migrations.expand or self.hooks.migrate

    def routing(self, environment: str | None) -> HostRouting:
        """The domains and path prefix of the app on this environment's hosts."""
        env = self.environments.get(environment) if environment else None
        return effective_routing(self.service, env)

    @model_validator(mode="after")
    def _deployable(self) -> Config:
        problems: list[tuple[Loc, str, object]] = []
        if self.hooks.migrate and self.migrations.expand:
            message = (
                "hooks.migrate is the older name of migrations.expand and both are set; "
                "expected only migrations.expand (move the command there)"
            )
            problems.append((("hooks", "migrate", KEY), message, None))
        if self.environments and self.service is None:
            message = (
                "environments need a service section to deploy "
                "(expected service: with start and port)"
            )
            problems.append((("environments", KEY), message, None))
        secret_names = set(self.service.secret_names) if self.service else set()
        for env_name, env in self.environments.items():
            for key in env.env:
                if key in secret_names:
                    message = f"{key!r} is both in env and in service.secrets; expected one"
                    problems.append((("environments", env_name, "env", key, KEY), message, key))
        for env_name, env in self.environments.items():
            # the canary judge, the post-deploy monitor and guarded flag rollouts (which
            # need the routers' flags) read analysis: thresholds nothing reads would give
            # a false sense of safety
            if (
                env.analysis is not None
                and env.strategy != "canary"
                and not env.monitor
                and self.flags.stickiness is None
            ):
                message = (
                    "analysis is only used by strategy: canary or a monitor period (or guarded "
                    "flag rollouts, with flags.stickiness); expected strategy: canary or "
                    "monitor: (like 15m)"
                )
                problems.append((("environments", env_name, "analysis", KEY), message, None))
        for env_name, env in self.environments.items():
            got = effective_routing(self.service, env)
            if not got.domains and (got.path_prefix or got.strip_prefix):
                message = (
                    "path_prefix and strip_prefix apply to requests by host name; expected "
                    "domains: (like [shop.example.com]) here or under service"
                )
                problems.append((("environments", env_name, "path_prefix", KEY), message, None))
            if got.tls is not None and not got.domains:
                message = (
                    "tls serves the app's domains over HTTPS; expected domains: (like "
                    "[shop.example.com]) here or under service"
                )
                problems.append((("environments", env_name, "tls", KEY), message, None))
            if got.tls is not None and got.tls.acme is not None:
                wild = [d for d in got.domains if "*" in d]
                if wild:
                    message = (
                        f"tls: acme gets certificates over HTTP-01, which cannot prove "
                        f"{wild[0]}; expected names without '*', or cert and key files"
                    )
                    problems.append((("environments", env_name, "tls", KEY), message, None))
        # Each host's router listens on the app's one public port, so one host cannot
        # serve two environments of the same app.
        owner: dict[str, str] = {}
        for env_name, env in self.environments.items():
            if not isinstance(env.hosts, list):
                continue
            for i, host in enumerate(env.hosts):
                if host in owner:
                    message = (
                        f"host {host!r} is already in environment {owner[host]!r}; expected "
                        "each host in one environment (they share the app's port)"
                    )
                    problems.append((("environments", env_name, "hosts", i), message, host))
                owner.setdefault(host, env_name)
        if problems:
            raise invalid(problems)
        return self
