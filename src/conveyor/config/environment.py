"""The `environments:` section of conveyor.yml: hosts, strategy, checks and policies."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from conveyor.config.base import KEY, Loc, Section, describe, invalid
from conveyor.config.durations import Duration, Percent, PositiveDuration
from conveyor.config.infra import InfraCheckSetting
from conveyor.config.load import LoadTest
from conveyor.config.metric_source import MetricSourceSetting
from conveyor.config.monitor import Monitor, MonitorSetting
from conveyor.config.routing import Domains, PathPrefix, domains_field, prefix_field, strip_field
from conveyor.config.tls import TlsSetting, redirect_field, tls_field
from conveyor.config.values import (
    Batch,
    EnvMap,
    HttpProbe,
    NonEmptyStr,
    StatusCode,
    TrafficPercent,
)
from conveyor.config.window import Window

Strategy = Literal["rolling", "blue-green", "canary"]
AnnounceMoment = Literal["before", "after"]
# analysis.warmup: caches and JITs fill within the first hundreds of requests, which a
# canary at normal traffic sees in seconds; 10 s leaves most of the default 60-s step
# compared and delays a decision by no more than that
WARMUP = 10.0
MAX_WARMUP = 600.0
HOST_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_HOSTS_FORMS = (
    "expected a list of agent names like [web-1, web-2], "
    "or a mapping with a command that prints one name a line like {command: ./inventory.sh}"
)


def _check_host_name(value: str) -> str:
    if not re.fullmatch(HOST_NAME_PATTERN, value):
        raise ValueError(f"expected an agent name like web-1, got {describe(value)}")
    return value


HostName = Annotated[
    str,
    AfterValidator(_check_host_name),
    WithJsonSchema({"type": "string", "pattern": HOST_NAME_PATTERN}),
]


class HostsCommand(Section):
    """Hosts found at deploy time: a command that prints one agent name a line."""

    command: NonEmptyStr


def _hosts_form(value: Any) -> str | None:
    if isinstance(value, list):
        return "hosts:list"
    if isinstance(value, dict | HostsCommand):
        return "hosts:command"
    return None


def _check_host_list(value: Any) -> Any:
    if not isinstance(value, list):
        return value
    if not value:
        raise invalid([((), "expected at least one agent name, like [web-1]", value)])
    seen: set[str] = set()
    for i, name in enumerate(value):
        if name in seen:
            raise invalid([((i,), f"host {describe(name)} is listed twice", name)])
        seen.add(name)
    return value


Hosts = Annotated[
    Annotated[list[HostName], AfterValidator(_check_host_list), Tag("hosts:list")]
    | Annotated[HostsCommand, Tag("hosts:command")],
    Discriminator(
        _hosts_form, custom_error_type="conveyor_hosts", custom_error_message=_HOSTS_FORMS
    ),
]
"""Agent names, or a command that prints them."""


class VerifyCheck(Section):
    """A check after a deployment: an HTTP request, a command or a load test (judged
    against the previous release's); failure rolls back."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [{"required": ["http"]}, {"required": ["run"]}, {"required": ["load"]}]
        }
    )

    http: HttpProbe | None = None
    run: NonEmptyStr | None = None
    load: LoadTest | None = None
    # 200 for http checks (set below); commands have no status.
    expect: StatusCode | None = Field(
        default=None, description="The status an http check expects. Default: 200."
    )
    timeout: PositiveDuration = Field(
        default=10.0, description="Default: 10s for http checks, 5m for commands."
    )

    @model_validator(mode="before")
    @classmethod
    def _defaults_by_kind(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if "http" in data and "run" not in data:
            return {"expect": 200, **data}
        if "run" in data and "http" not in data:
            # A smoke script needs longer than one HTTP request.
            return {"timeout": "5m", **data}
        return data

    @model_validator(mode="after")
    def _one_kind(self) -> VerifyCheck:
        kinds = [k for k in ("http", "run", "load") if getattr(self, k) is not None]
        if len(kinds) > 1:
            raise invalid(
                [
                    (
                        (),
                        f"expected one of http, run or load in a check, not {' and '.join(kinds)}",
                        None,
                    )
                ]
            )
        if not kinds:
            raise invalid(
                [
                    (
                        (),
                        "expected a check with http: (like GET /healthz), run: (a command) or "
                        "load: (like {rate: 200/s, duration: 2m})",
                        None,
                    )
                ]
            )
        if self.http is None and self.expect is not None:
            raise invalid([(("expect", KEY), "expect only applies to http checks", None)])
        return self


class Analysis(Section):
    """Ceilings that the new release must stay under, judged by the canary and the monitor."""

    error_rate: Percent | None = None
    p99: PositiveDuration | None = None
    compare: Literal["baseline"] | None = None
    # compare: the worsening of the 5xx rate (percentage points) the sequential test looks for
    margin: Percent = 0.005
    min_requests: Annotated[int, Strict(), Field(ge=0)] = 100
    advance: Literal["early", "full"] = "full"
    source: MetricSourceSetting = "router"
    # the first seconds of the new release's traffic that are not compared (latency and
    # the baseline comparisons; the 5xx ceiling applies): a cache or JIT warming up
    warmup: Duration = WARMUP
    # compare: the chance its tests ever fail an identical release over a whole deployment
    false_alarms: Percent = 0.01

    @field_validator("false_alarms")
    @classmethod
    def _a_budget(cls, budget: float) -> float:
        if not 0.0001 <= budget <= 0.1:
            raise invalid(
                [((), "expected a false-alarm budget from 0.01% to 10%, like 1%", budget)]
            )
        return budget

    @field_validator("margin")
    @classmethod
    def _margin_above_zero(cls, margin: float) -> float:
        if margin <= 0:
            raise invalid(
                [((), "expected a margin above 0% (the worsening to look for, like 0.5%)", margin)]
            )
        return margin

    @field_validator("warmup")
    @classmethod
    def _short_warmup(cls, warmup: float) -> float:
        if warmup > MAX_WARMUP:
            raise invalid(
                [
                    (
                        (),
                        f"expected a warm-up of at most {MAX_WARMUP / 60:g}m (like 10s or 30s): "
                        "a longer one leaves regressions uncompared",
                        warmup,
                    )
                ]
            )
        return warmup

    @model_validator(mode="after")
    def _judges_something(self) -> Analysis:
        if self.error_rate is None and self.p99 is None and self.compare is None:
            raise invalid(
                [((), "expected at least one of error_rate, p99 or compare in analysis", None)]
            )
        return self


def _hosts_or_provision(schema: dict[str, Any]) -> None:
    """In the JSON Schema: hosts, unless provision names them."""
    schema["required"] = [k for k in schema.get("required", []) if k != "hosts"]
    if not schema["required"]:
        del schema["required"]
    schema["oneOf"] = [{"required": ["hosts"]}, {"required": ["provision", "teardown"]}]


class Environment(Section):
    """A named set of hosts with a strategy, checks and policies (domains: routing.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_hosts_or_provision)

    hosts: Hosts
    approval: Literal["required"] | None = None
    window: Window | None = None
    strategy: Strategy = "rolling"
    steps: list[TrafficPercent] = Field(default_factory=lambda: [100])
    step_pause: Duration = 60.0
    # The schema shows the default as written, not as the dataclass's fields.
    batch: Batch = Field(default=Batch(hosts=1), json_schema_extra={"default": 1})
    analysis: Analysis | None = None
    monitor: MonitorSetting = Field(default_factory=Monitor)
    verify: list[VerifyCheck] = Field(default_factory=list)
    # over service.env for this environment's hosts (secrets differ per environment on the
    # server: `conveyor secret set APP NAME --env ENV`)
    env: EnvMap = Field(default_factory=dict)
    domains: Domains = domains_field()
    path_prefix: PathPrefix | None = prefix_field()
    strip_prefix: bool | None = strip_field()
    tls: TlsSetting | None = tls_field()
    redirect_http: bool | None = redirect_field()
    # notifications to the notify targets before a deployment moves traffic and after it
    # ends (notify/announcements.py)
    announce: list[AnnounceMoment] = Field(default_factory=list)
    # infrastructure checks each host's agent runs before traffic moves (config/infra.py)
    checks: list[InfraCheckSetting] = Field(default_factory=list)

    @field_validator("announce")
    @classmethod
    def _each_moment_once(cls, moments: list[str]) -> list[str]:
        if len(set(moments)) != len(moments):
            raise invalid([((), "expected before and after at most once each", moments)])
        return moments

    # a fresh environment for each deployment (deploy/provisioning.py): the command prints
    # the hosts' names, one a line (it stands for hosts:); teardown always runs after
    provision: NonEmptyStr | None = None
    teardown: NonEmptyStr | None = None

    @model_validator(mode="before")
    @classmethod
    def _provision_names_the_hosts(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("provision") is None:
            return data
        derived = {"command": data["provision"]}
        if "hosts" in data and data["hosts"] not in (derived, HostsCommand(**derived)):
            # (a stored config, dumped after validation, holds the hosts derived below)
            raise invalid(
                [
                    (
                        ("hosts", KEY),
                        "an environment with provision: gets its hosts from the provision "
                        "command's output; leave hosts out",
                        None,
                    )
                ]
            )
        return {**data, "hosts": derived}

    @model_validator(mode="after")
    def _teardown_with_provision(self) -> Environment:
        if self.provision is not None and self.teardown is None:
            raise invalid(
                [
                    (
                        ("provision", KEY),
                        "expected teardown: (like ./infra/down.sh) beside provision: what is "
                        "created for a deployment is always torn down",
                        None,
                    )
                ]
            )
        if self.teardown is not None and self.provision is None:
            raise invalid(
                [
                    (
                        ("teardown", KEY),
                        "teardown only applies with provision: (like ./infra/up.sh)",
                        None,
                    )
                ]
            )
        return self

    @field_validator("steps")
    @classmethod
    def _steps_climb_to_100(cls, steps: list[int]) -> list[int]:
        if not steps:
            raise invalid([((), "expected a list of traffic percents ending at 100", steps)])
        problems: list[tuple[Loc, str, object]] = []
        for i in range(1, len(steps)):
            if steps[i] <= steps[i - 1]:
                message = f"expected steps to increase, got {steps[i]} after {steps[i - 1]}"
                problems.append(((i,), message, steps[i]))
        if not problems and steps[-1] != 100:
            last = len(steps) - 1
            problems.append(
                ((last,), f"expected the last step to be 100, got {steps[-1]}", steps[-1])
            )
        if problems:
            raise invalid(problems)
        return steps
