"""The keys of issue 19's stages: `load:` verify checks, `provision:` and `teardown:`."""

from __future__ import annotations

import pytest

from conveyor.config import ConfigError, HostsCommand, parse_config
from conveyor.config.load import parse_rate

HEAD = """\
app: shop
service:
  start: python app.py
  port: 8000
environments:
  integration:
"""


@pytest.mark.parametrize(
    ("written", "rate"),
    [("200/s", 200.0), ("600/m", 10.0), (40, 40.0), ("12.5/s", 12.5), ("5", 5.0), (0.5, 0.5)],
)
def test_rates(written: object, rate: float) -> None:
    assert parse_rate(written) == rate


@pytest.mark.parametrize("written", ["fast", "200/h", 0, -1, "0/s", "9000/s", True, None, "1e3"])
def test_bad_rates_say_what_was_expected(written: object) -> None:
    with pytest.raises(ValueError, match="expected a request rate like 200/s"):
        parse_rate(written)


def test_a_load_check() -> None:
    config = parse_config(
        HEAD + "    hosts: [perf-1]\n    verify:\n"
        "      - load: {rate: 200/s, duration: 2m, paths: [/, /search]}\n"
    )
    load = config.environments["integration"].verify[0].load
    assert load is not None
    assert (load.rate, load.duration, load.paths) == (200.0, 120.0, ["/", "/search"])
    again = parse_config(
        HEAD + "    hosts: [perf-1]\n    verify:\n      - load: {rate: 5, duration: 10s}\n"
    )
    assert again.environments["integration"].verify[0].load.paths == ["/"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ("{load: {rate: 200/s}}", "missing required key 'duration'"),
        ("{load: {rate: 200/s, duration: 2h}}", "at most 1h"),
        ("{load: {rate: 200/s, duration: 1m, paths: [search]}}", "a path starting with /"),
        ("{load: {rate: 200/s, duration: 1m, paths: []}}", "at least one path"),
        ("{load: {rate: 200/s, duration: 1m}, run: ./x}", "not run and load"),
        ("{load: {rate: 200/s, duration: 1m}, expect: 200}", "expect only applies to http"),
    ],
)
def test_bad_load_checks(check: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(HEAD + f"    hosts: [perf-1]\n    verify:\n      - {check}\n")


def test_provision_stands_for_the_hosts() -> None:
    config = parse_config(HEAD + "    provision: ./infra/up.sh\n    teardown: ./infra/down.sh\n")
    env = config.environments["integration"]
    assert (env.provision, env.teardown) == ("./infra/up.sh", "./infra/down.sh")
    assert env.hosts == HostsCommand(command="./infra/up.sh")
    # as the server stores it and reads it again
    again = type(config).model_validate_json(config.model_dump_json())
    assert again.environments["integration"] == env


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ("    provision: ./up.sh\n", "expected teardown: (like ./infra/down.sh) beside provision"),
        ("    hosts: [a]\n    teardown: ./down.sh\n", "teardown only applies with provision"),
        (
            "    hosts: [a]\n    provision: ./up.sh\n    teardown: ./down.sh\n",
            "gets its hosts from the provision command's output; leave hosts out",
        ),
    ],
)
def test_bad_provisions(keys: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(HEAD + keys)
    assert message in str(caught.value)


def test_the_schema_asks_for_hosts_or_provision_and_teardown() -> None:
    from conveyor.config.schema import config_json_schema

    env = config_json_schema()["$defs"]["Environment"]
    assert "hosts" not in env.get("required", [])
    assert env["oneOf"] == [{"required": ["hosts"]}, {"required": ["provision", "teardown"]}]
    check = config_json_schema()["$defs"]["VerifyCheck"]
    assert {"required": ["load"]} in check["oneOf"]
