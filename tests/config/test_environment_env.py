"""An environment's env: laid over service.env for its hosts; never a secret's name."""

from __future__ import annotations

import pytest

from conveyor.config import ConfigError, parse_config

TEXT = """\
app: shop
service:
  start: ./run
  port: 8000
  env: {LOG_LEVEL: info, WORKERS: 2}
  secrets: [DATABASE_URL]
environments:
  staging:
    hosts: [stage-1]
    env: {LOG_LEVEL: debug}
  production:
    hosts: [web-1]
"""


def test_an_environments_env_is_kept_apart_from_the_services() -> None:
    config = parse_config(TEXT)
    assert config.environments["staging"].env == {"LOG_LEVEL": "debug"}
    assert config.environments["production"].env == {}
    assert config.service is not None and config.service.env["LOG_LEVEL"] == "info"


def test_a_secrets_name_in_an_environments_env_is_refused_where_it_is() -> None:
    text = TEXT.replace("env: {LOG_LEVEL: debug}", "env: {DATABASE_URL: sqlite://}")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "conveyor.yml")
    (issue,) = caught.value.issues
    assert (issue.line, issue.column) == (10, 11)
    assert "'DATABASE_URL' is both in env and in service.secrets" in issue.message


def test_a_secret_may_name_the_command_that_prints_it() -> None:
    text = TEXT.replace(
        "secrets: [DATABASE_URL]",
        'secrets: [DATABASE_URL, {API_KEY: {command: "vault kv get -field=key secret/shop"}}]',
    )
    service = parse_config(text).service
    assert service is not None
    assert service.secret_names == ["DATABASE_URL", "API_KEY"]
    assert service.secret_commands == {"API_KEY": "vault kv get -field=key secret/shop"}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{API_KEY: {run: x}}", "unknown key"),
        ("{A: {command: x}, B: {command: y}}", "expected one secret name with its command"),
        ("{api_key: {command: x}}", "secret name"),
        ("42", "expected a secret name like DATABASE_URL, or a name with the command"),
        ("{DATABASE_URL: {command: x}}", "'DATABASE_URL' is listed twice"),
    ],
)
def test_a_broken_secret_entry_says_what_was_expected(entry: str, message: str) -> None:
    text = TEXT.replace("secrets: [DATABASE_URL]", f"secrets: [DATABASE_URL, {entry}]")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "conveyor.yml")
    assert message in str(caught.value), str(caught.value)
    assert caught.value.issues[0].line == 6
