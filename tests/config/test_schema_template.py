from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conveyor.config import (
    STARTER_CONFIG,
    config_json_schema,
    parse_config,
    starter_config,
    suggest_app_name,
)


def test_schema_is_json_with_the_top_level_keys() -> None:
    schema = json.loads(json.dumps(config_json_schema()))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["app"]
    assert set(schema["properties"]) == {
        "app",
        "branch",
        "test",
        "build",
        "artifact",
        "service",
        "migrations",
        "hooks",
        "environments",
        "notify",
        "flags",
        "runs_on",
    }


def test_schema_writes_durations_percents_and_windows_as_strings() -> None:
    defs = config_json_schema()["$defs"]
    environment = defs["Environment"]["properties"]
    pause = environment["step_pause"]
    duration = next(form for form in pause["anyOf"] if form["type"] == "string")
    assert re.fullmatch(duration["pattern"], "1m30s")
    assert not re.fullmatch(duration["pattern"], "ten minutes")
    assert "duration" in pause["description"]
    window = next(form for form in environment["window"]["anyOf"] if form.get("type") == "string")
    assert re.search(window["pattern"], "Mon-Thu 09:00-16:00 Europe/Madrid")
    rate = next(
        form for form in defs["Analysis"]["properties"]["error_rate"]["anyOf"] if "pattern" in form
    )
    assert rate["type"] == "string" and re.fullmatch(rate["pattern"], "0.5%")
    assert environment["batch"]["default"] == 1
    warm = defs["Service"]["properties"]["keep_warm_releases"]
    assert (warm["type"], warm["minimum"], warm["default"]) == ("integer", 0, 1)
    assert "keep_warm" in warm["description"]


def test_schema_offers_both_metric_sources_with_the_default_queries() -> None:
    defs = config_json_schema()["$defs"]
    source = defs["Analysis"]["properties"]["source"]
    assert source["default"] == "router"
    assert {"const": "router", "type": "string"} in source["oneOf"]
    assert {"$ref": "#/$defs/Prometheus"} in source["oneOf"]
    assert defs["Prometheus"]["required"] == ["prometheus"]
    queries = defs["PrometheusQueries"]["properties"]
    assert queries["requests"]["default"].startswith("sum by (release, host) (conveyor_router_")


def test_starter_config_validates() -> None:
    config = parse_config(STARTER_CONFIG)
    assert config.app == "my-app"
    assert list(config.environments) == ["staging", "production"]
    assert config.test[0].run == "true"
    # a release that turns bad after it is deployed rolls back: the monitor is on
    production = config.environments["production"]
    assert production.monitor.duration == 600.0
    assert production.analysis is not None and production.analysis.error_rate == 0.01


def test_starter_config_commented_keys_validate_when_uncommented() -> None:
    # The canary block replaces the rolling lines; everything else is uncommented as is.
    text = STARTER_CONFIG.replace("    strategy: rolling", "    #").replace("    batch: 1", "    #")
    lines = []
    for line in text.splitlines():
        match = re.fullmatch(r"(\s*)# (\s*(?:- )?[a-z_0-9]+:.*)", line)
        lines.append(match.group(1) + match.group(2) if match else line)
    config = parse_config("\n".join(lines))
    production = config.environments["production"]
    assert production.strategy == "canary"
    assert production.approval == "required"
    assert production.analysis is not None and production.monitor.duration == 600.0
    assert config.hooks.install == "./bin/install"
    assert config.notify[0].on == ["failure", "rollback", "approval", "success"]


@pytest.mark.parametrize(
    ("files", "test", "build", "start"),
    [
        (["pyproject.toml", "main.py"], "python -m pytest -q", "pip install .", "python main.py"),
        (["requirements.txt"], "python -m pytest -q", "pip install -r requirements.txt", "python"),
        (["package.json"], "npm test", "npm ci", "npm start"),
        (["Makefile"], "make test", "make build", "./bin/start"),
        ([], "true", "true", "./bin/start"),
    ],
)
def test_starter_config_guesses_commands(
    tmp_path: Path, files: list[str], test: str, build: str, start: str
) -> None:
    for name in files:
        (tmp_path / name).write_text("")
    config = parse_config(starter_config("shop", tmp_path))
    assert config.app == "shop"
    assert config.test[0].run == test
    assert config.build[0].run.startswith(build)
    assert config.service is not None and config.service.start.startswith(start)


def test_starter_config_refuses_a_bad_app_name() -> None:
    with pytest.raises(ValueError, match="expected an app name"):
        starter_config("My App")


@pytest.mark.parametrize(
    ("directory", "name"),
    [("My_Shop", "my-shop"), ("shop", "shop"), ("--x--", "x"), ("日本", "app")],
)
def test_suggest_app_name(tmp_path: Path, directory: str, name: str) -> None:
    path = tmp_path / directory
    path.mkdir()
    assert suggest_app_name(path) == name
