from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.config import (
    Batch,
    ConfigError,
    ConfigIssue,
    HostsCommand,
    HttpProbe,
    load_config,
    parse_config,
)
from conveyor.config.metric_source import DEFAULT_LATENCY, DEFAULT_REQUESTS, Prometheus

SPEC_EXAMPLE = Path(__file__).parent / "fixtures" / "spec_example.yml"

# A valid config that the broken cases below vary; line numbers matter.
BASE = """\
app: shop
service:
  start: python app.py
  port: 8000
environments:
  staging:
    hosts: [stage-1]
  production:
    hosts: [web-1, web-2]
    strategy: canary
    steps: [10, 50, 100]
"""


def test_spec_example_validates() -> None:
    config = load_config(SPEC_EXAMPLE)
    assert config.app == "shop"
    assert [step.timeout for step in config.test] == [600.0]
    assert config.artifact.exclude == ["tests/"]
    assert config.service is not None
    assert config.service.health.interval == 1.0
    assert config.service.keep_warm == 600.0
    assert config.service.keep_warm_releases == 1
    assert config.service.secrets == ["DATABASE_URL"]
    assert config.hooks.migrate == "./bin/migrate"
    assert list(config.environments) == ["staging", "production"]
    staging = config.environments["staging"]
    assert staging.strategy == "rolling"
    assert staging.verify[0].http == HttpProbe("GET", "/healthz")
    assert staging.verify[0].timeout == 10.0
    assert staging.verify[1].run == "./scripts/smoke.sh"
    production = config.environments["production"]
    assert production.approval == "required"
    assert production.window is not None and production.window.zone.key == "Europe/Madrid"
    assert production.steps == [10, 50, 100]
    assert production.step_pause == 120.0
    assert production.batch == Batch(hosts=1)
    assert production.analysis is not None
    assert production.analysis.error_rate == pytest.approx(0.01)
    assert production.analysis.p99 == 1.0
    assert production.analysis.advance == "early"
    assert production.monitor.duration == 900.0
    assert config.notify[0].on == ["failure", "rollback", "approval", "success"]


def test_defaults() -> None:
    config = parse_config("app: shop\n")
    assert config.branch == "main"
    assert config.test == [] and config.build == []
    assert config.artifact.include == ["."]
    assert config.service is None
    assert config.environments == {}
    env = parse_config(BASE.replace("    strategy: canary\n", "")).environments["production"]
    assert env.strategy == "rolling"
    assert env.step_pause == 60.0
    assert env.monitor.duration == 0.0
    assert env.batch.size(2) == 1


def test_shorthands() -> None:
    text = BASE.replace("  port: 8000\n", "  port: 8000\n  health: /up\n") + (
        "    verify:\n      - http: /healthz\n      - run: ./smoke.sh\n"
    )
    config = parse_config(text + "test:\n  - python -m pytest\n")
    assert config.test[0].run == "python -m pytest"
    assert config.service is not None and config.service.health.path == "/up"
    verify = config.environments["production"].verify
    assert verify[0].http == HttpProbe("GET", "/healthz")
    assert verify[1].timeout == 300.0  # a command gets longer than one request


def test_hosts_command_and_env_values() -> None:
    text = BASE.replace("[stage-1]", "{command: ./inventory.sh}")
    text = text.replace("  port: 8000\n", "  port: 8000\n  env: {WORKERS: 4, DEBUG: true}\n")
    config = parse_config(text)
    assert config.environments["staging"].hosts == HostsCommand(command="./inventory.sh")
    assert config.service is not None
    assert config.service.env == {"WORKERS": "4", "DEBUG": "true"}


def test_analysis_source() -> None:
    analysis = BASE + "    analysis:\n      p99: 1s\n"
    found = parse_config(analysis).environments["production"].analysis
    assert found is not None and found.source == "router"
    text = analysis + (
        "      source:\n        prometheus: https://mon.example.com/prometheus\n"
        "        queries: {errors: 'sum by (release) (http_5xx{job=\"$app\"})'}\n"
    )
    found = parse_config(text).environments["production"].analysis
    assert found is not None and isinstance(found.source, Prometheus)
    assert found.source.prometheus == "https://mon.example.com/prometheus"
    assert found.source.queries.errors == 'sum by (release) (http_5xx{job="$app"})'
    assert found.source.queries.requests == DEFAULT_REQUESTS
    assert "$releases" in DEFAULT_REQUESTS and "$hosts" in DEFAULT_LATENCY


def test_dump_round_trips() -> None:
    config = load_config(SPEC_EXAMPLE)
    dumped = config.model_dump(mode="json")
    assert dumped["environments"]["production"]["analysis"]["error_rate"] == "1%"
    assert dumped["environments"]["production"]["window"] == "Mon-Thu 09:00-16:00 Europe/Madrid"
    assert type(config).model_validate(dumped) == config
    assert type(config).model_validate(config.model_dump()) == config


def test_models_are_frozen() -> None:
    config = parse_config(BASE)
    with pytest.raises(ValueError, match="frozen"):
        config.app = "other"  # type: ignore[misc]


# (case, text, line, column, part of the message); lines and columns are 1-based.
BROKEN = [
    ("bad indentation", BASE.replace("  port: 8000", "   port: 8000"), 4, 8, "indent"),
    ("dedented key", BASE.replace("  port: 8000", " port: 8000"), 4, 2, "bad indentation"),
    (
        "unclosed quote",
        BASE.replace("start: python app.py", 'start: "python app.py'),
        3,
        10,
        "unclosed quote",
    ),
    ("tab", BASE.replace("  port: 8000", "\tport: 8000"), 4, 1, "tab character"),
    (
        "duplicate key",
        BASE.replace("  port: 8000\n", "  port: 8000\n  start: x\n"),
        5,
        3,
        "duplicate key 'start'",
    ),
    (
        "unknown top-level key",
        BASE + "buidl: [make]\n",
        12,
        1,
        "unknown key 'buidl', did you mean 'build'?",
    ),
    (
        "unknown nested key",
        BASE + "    stratgy: canary\n",
        12,
        5,
        "unknown key 'stratgy', did you mean 'strategy'? (expected one of: hosts, approval",
    ),
    ("wrong type", BASE.replace("8000", '"eighty"'), 4, 9, "expected a whole number, got 'eighty'"),
    ("port too high", BASE.replace("8000", "70000"), 4, 9, "from 1 to 65535, got 70000"),
    (
        "steps decrease",
        BASE.replace("[10, 50, 100]", "[50, 10, 100]"),
        11,
        17,
        "expected steps to increase, got 10 after 50",
    ),
    (
        "steps stop short",
        BASE.replace("[10, 50, 100]", "[10, 50]"),
        11,
        17,
        "expected the last step to be 100",
    ),
    (
        "step above 100",
        BASE.replace("[10, 50, 100]", "\n      - 10\n      - 150"),
        13,
        9,
        "from 1 to 100, got 150",
    ),
    (
        "error rate above 100%",
        BASE + "    analysis:\n      error_rate: 150%\n",
        13,
        19,
        "between 0% and 100%, got '150%'",
    ),
    (
        "no margin to look for",
        BASE + "    analysis:\n      compare: baseline\n      margin: 0%\n",
        14,
        15,
        "expected a margin above 0%",
    ),
    (
        "duration in words",
        BASE + "    step_pause: ten minutes\n",
        12,
        17,
        "expected a duration like 30s, 10m or 1h",
    ),
    (
        "unknown day",
        BASE + "    window: Mon-Xyz 09:00-16:00 Europe/Madrid\n",
        12,
        13,
        "unknown day 'Xyz'",
    ),
    (
        "unknown time zone",
        BASE + '    window: "Mon-Fri 09:00-16:00 Mars/Olympus"\n',
        12,
        13,
        "expected an IANA time zone like Europe/Madrid",
    ),
    ("zero batch", BASE + "    batch: 0%\n", 12, 12, "above 0%"),
    (
        "app name with capitals",
        BASE.replace("app: shop", "app: Shop"),
        1,
        6,
        "expected an app name of lowercase letters",
    ),
    ("missing app", BASE.replace("app: shop\n", "# no app\n"), 2, 1, "missing required key 'app'"),
    (
        "missing hosts",
        BASE.replace("    hosts: [stage-1]\n", "    strategy: rolling\n"),
        7,
        5,
        "missing required key 'hosts'",
    ),
    (
        "verify with http and run",
        BASE + "    verify:\n      - http: GET /healthz\n        run: ./smoke.sh\n",
        13,
        9,
        "expected one of http, run or load in a check, not http and run",
    ),
    (
        "verify with neither",
        BASE + "    verify:\n      - expect: 200\n",
        13,
        9,
        "expected a check with http",
    ),
    (
        "hosts as a bare name",
        BASE.replace("[stage-1]", "stage-1"),
        7,
        12,
        "expected a list of agent names like [web-1, web-2], or a mapping with a command",
    ),
    (
        "hosts command with an extra key",
        BASE.replace("[stage-1]", "{command: ./x, user: deploy}"),
        7,
        27,
        "unknown key 'user' (expected one of: command)",
    ),
    ("no hosts", BASE.replace("[stage-1]", "[]"), 7, 12, "at least one agent name"),
    (
        "host in two environments",
        BASE.replace("[web-1, web-2]", "[web-1, stage-1]"),
        9,
        20,
        "host 'stage-1' is already in environment 'staging'",
    ),
    (
        "environments without service",
        "app: shop\nenvironments:\n  staging:\n    hosts: [a]\n",
        2,
        1,
        "environments need a service section to deploy",
    ),
    (
        "analysis nothing reads",
        BASE.replace("strategy: canary", "strategy: rolling") + "    analysis: {p99: 1s}\n",
        12,
        5,
        "analysis is only used by strategy: canary or a monitor period",
    ),
    ("empty analysis", BASE + "    analysis: {}\n", 12, 15, "at least one of error_rate, p99"),
    ("environment name", BASE.replace("staging:", "Staging:"), 6, 3, "an environment name"),
    (
        "source by a bare name",
        BASE + "    analysis:\n      p99: 1s\n      source: prometheus\n",
        14,
        15,
        "expected router, or a mapping with the URL of a Prometheus server",
    ),
    (
        "prometheus without a scheme",
        BASE + "    analysis:\n      p99: 1s\n      source: {prometheus: 'localhost:9090'}\n",
        14,
        28,
        "the URL of a Prometheus server like http://127.0.0.1:9090, got 'localhost:9090'",
    ),
    (
        "source without its URL",
        BASE + "    analysis:\n      p99: 1s\n      source: {queries: {}}\n",
        14,
        15,
        "missing required key 'prometheus'",
    ),
    (
        "unknown query",
        BASE
        + "    analysis:\n      p99: 1s\n      source:\n        prometheus: http://p:9090\n"
        + "        queries: {request: up}\n",
        16,
        19,
        "unknown key 'request', did you mean 'requests'?",
    ),
    (
        "unknown placeholder",
        BASE
        + "    analysis:\n      p99: 1s\n      source:\n        prometheus: http://p:9090\n"
        + '        queries:\n          errors: sum(x{app="$application"})\n',
        17,
        19,
        "unknown placeholder $application in the query: expected $app, $releases or $hosts",
    ),
    (
        "empty query",
        BASE
        + "    analysis:\n      p99: 1s\n      source:\n        prometheus: http://p:9090\n"
        + "        queries: {latency: ' '}\n",
        16,
        28,
        "expected a PromQL query",
    ),
    (
        "strategy",
        BASE.replace("canary", "linear"),
        10,
        15,
        "expected 'rolling', 'blue-green' or 'canary', got 'linear'",
    ),
    ("approval yes", BASE + "    approval: yes\n", 12, 15, "expected 'required', got 'yes'"),
    ("zero timeout", BASE + "test:\n  - run: make\n    timeout: 0s\n", 14, 14, "above zero"),
    ("empty step", BASE + "test:\n  - run: ''\n", 13, 10, "expected a non-empty string"),
    ("step as a number", BASE + "test:\n  - 42\n", 13, 5, "expected a command, or a mapping"),
    ("null list", BASE + "test:\n", 12, 1, "expected a list, got nothing (null)"),
    (
        "env var name",
        BASE.replace("  port: 8000\n", "  port: 8000\n  env: {1X: a}\n"),
        5,
        9,
        "an environment variable name",
    ),
    (
        "secret in env too",
        BASE.replace("  port: 8000\n", "  port: 8000\n  env: {DB: a}\n  secrets: [DB]\n"),
        6,
        13,
        "both in env and in secrets",
    ),
    ("notify url", BASE + "notify:\n  - url: team-channel\n", 13, 10, "an Apprise URL"),
    (
        "notify event",
        BASE + "notify:\n  - url: json://x\n    on: [failure, oops]\n",
        14,
        19,
        "got 'oops'",
    ),
    (
        "verify status",
        BASE + "    verify:\n      - http: GET /\n        expect: 700\n",
        14,
        17,
        "an HTTP status code from 100 to 599",
    ),
    (
        "expect on a command",
        BASE + "    verify:\n      - run: ./x\n        expect: 200\n",
        14,
        9,
        "expect only applies to http checks",
    ),
    (
        "artifact escapes",
        BASE + "artifact:\n  include: [../secrets]\n",
        13,
        13,
        "a path inside the repository",
    ),
    ("top level is a list", "- app: shop\n", 1, 1, "expected a mapping of keys like app: shop"),
    (
        "negative keep_warm_releases",
        BASE.replace("  port: 8000\n", "  port: 8000\n  keep_warm_releases: -1\n"),
        5,
        23,
        "expected a number at least 0, got -1",
    ),
    (
        "keep_warm_releases not a count",
        BASE.replace("  port: 8000\n", "  port: 8000\n  keep_warm_releases: 10m\n"),
        5,
        23,
        "expected a whole number, got '10m'",
    ),
    (
        "environment name longer than the store holds",
        BASE.replace("  staging:\n", "  " + "s" * 101 + ":\n"),
        6,
        3,
        "an environment name of at most 100 characters, got 101",
    ),
    (
        "step name longer than the store holds",
        BASE + "test:\n  - run: make\n    name: " + "n" * 256 + "\n",
        14,
        11,
        "a step name of at most 255 characters, got 256",
    ),
    ("empty file", "# just a comment\n", 1, 1, "the file is empty"),
    ("two documents", "app: shop\n---\napp: other\n", 2, 1, "a single YAML document"),
    ("unclosed bracket", "app: shop\ntest: [make\n", 2, 7, "unclosed bracket"),
    # the parser's own failures, a traceback before
    ("lists as a key", "app: shop\n? [[a]]\n: 2\n", 1, 1, "the YAML parser could not read"),
    ("merged into itself", "app: shop\na: &a {<<: *a}\n", 1, 1, "an anchor merged into itself"),
]


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        pytest.param(text, line, column, message, id=case)
        for case, text, line, column, message in BROKEN
    ],
)
def test_broken_config(text: str, line: int, column: int, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "conveyor.yml")
    issues = caught.value.issues
    assert len(issues) == 1, str(caught.value)
    issue = issues[0]
    assert (issue.line, issue.column) == (line, column), str(caught.value)
    assert message in issue.message
    assert "pydantic" not in issue.message and "Value error" not in issue.message


def test_error_lines_name_file_position_and_path() -> None:
    text = BASE.replace("[10, 50, 100]", "[50, 10, 100]").replace("8000", "70000")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "conveyor.yml")
    assert str(caught.value).splitlines() == [
        "conveyor.yml:4:9: service.port: expected a port number from 1 to 65535, got 70000",
        "conveyor.yml:11:17: environments.production.steps[1]: "
        "expected steps to increase, got 10 after 50",
    ]


def test_every_problem_is_reported_in_file_order() -> None:
    text = BASE.replace("app: shop", "app: Shop") + "    stratgy: canary\n    monitor: soon\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    positions = [(issue.line, issue.column) for issue in caught.value.issues]
    assert positions == [(1, 6), (12, 5), (13, 14)]


def test_issue_without_position() -> None:
    issue = ConfigIssue("conveyor.yml", 0, 0, "cannot read it")
    assert str(issue) == "conveyor.yml: cannot read it"


def test_load_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "conveyor.yml"
    path.write_text("app: shop\nbranch: [main]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}:2:9: branch: expected a string, got a list"


def test_load_config_rejects_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "conveyor.yml"
    path.write_bytes(b"app: shop\nbranch: ma\xffin\n")
    with pytest.raises(ConfigError, match=r":2:11: expected UTF-8 text"):
        load_config(path)


def test_load_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "conveyor.yml")


@pytest.mark.parametrize(
    ("written", "duration", "holdback"),
    [
        ("15m", 900.0, 0.05),
        ("{duration: 15m, holdback: 5%}", 900.0, 0.05),
        ("{duration: 10m, holdback: 0%}", 600.0, 0.0),
        ("{duration: 90s, holdback: 20%}", 90.0, 0.2),
        ("{duration: 90s}", 90.0, 0.05),
    ],
)
def test_monitor_is_a_duration_or_a_duration_with_its_holdback(
    written: str, duration: float, holdback: float
) -> None:
    env = parse_config(BASE + f"    monitor: {written}\n").environments["production"]
    assert env.monitor.duration == duration
    assert env.monitor.holdback == pytest.approx(holdback)
    assert env.monitor.holdback_weight == round(holdback * 100)
    again = parse_config(BASE).model_validate_json(
        parse_config(BASE + f"    monitor: {written}\n").model_dump_json()
    )
    assert again.environments["production"].monitor == env.monitor


@pytest.mark.parametrize(
    ("written", "most"),
    [
        ("15m", 30),  # 5%, raised up to 30% as the traffic when the window starts asks
        ("{duration: 15m, holdback: 5%, holdback_max: 20%}", 20),
        ("{duration: 15m, holdback: 30%}", 30),  # never below what is written
        ("{duration: 15m, holdback_max: 5%}", 5),  # 5%, as written
        ("{duration: 15m, holdback: 0%}", 0),  # none: nothing to raise
    ],
)
def test_the_holdback_is_raised_at_most_to_holdback_max(written: str, most: int) -> None:
    env = parse_config(BASE + f"    monitor: {written}\n").environments["production"]
    assert env.monitor.holdback_max_weight == most


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("{duration: 15m, holdback_max: 60%}", "expected a whole percent of traffic from 0%"),
        ("{duration: 15m, holdback: 2.5%}", "expected a whole percent of traffic from 0% to 50%"),
        ("{duration: 15m, holdback: 60%}", "expected a whole percent of traffic from 0% to 50%"),
        ("{duration: 15m, holdback: 5}", "expected a percentage with a % sign"),
        ("{during: 15m}", "during"),
        ("soon", "expected a duration like 30s, 10m or 1h"),
    ],
)
def test_a_wrong_monitor_says_what_was_expected(written: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + f"    monitor: {written}\n")
    assert message in str(caught.value)
    assert ":12:" in str(caught.value)


def test_the_false_alarm_budget_is_bounded() -> None:
    text = BASE + "    analysis: {compare: baseline, false_alarms: 0.1%}\n"
    analysis = parse_config(text).environments["production"].analysis
    assert analysis is not None and analysis.false_alarms == pytest.approx(0.001)
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + "    analysis: {compare: baseline, false_alarms: 20%}\n")
    assert "expected a false-alarm budget from 0.01% to 10%" in str(caught.value)
