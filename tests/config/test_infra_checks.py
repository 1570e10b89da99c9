"""`checks:` of an environment: each kind, and what is refused with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.config import ConfigError, load_config
from conveyor.deploy.infrachecking import checks_request, verdict
from conveyor.protocol import CheckOutcome, ChecksResult

BASE = (
    "app: shop\nservice: {start: ./run, port: 8000}\n"
    "environments:\n  production:\n    hosts: [web-1]\n    checks:\n"
)


def load(tmp_path: Path, checks: str) -> object:
    path = tmp_path / "conveyor.yml"
    path.write_text(BASE + checks)
    return load_config(path)


def test_every_kind_reads_into_what_the_agent_runs(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "      - tcp: 127.0.0.1:5432\n"
        "      - tls: {host: shop.example.com, min_days: 14}\n"
        "      - disk: {path: /var, min_free: 10%}\n"
        "      - mount: /data\n"
        "      - command: ./check.sh\n"
        "        timeout: 1m\n",
    )
    env = config.environments["production"]  # type: ignore[attr-defined]
    request = checks_request(7, "shop", "production", env)
    assert request.id == "checks-7"
    assert [c.label() for c in request.checks] == [
        "tcp 127.0.0.1:5432",
        "tls shop.example.com:443 (at least 14 days left)",
        "disk /var (at least 10% free)",
        "mount /data",
        "command ./check.sh",
    ]
    assert request.checks[4].timeout == 60.0 and request.checks[2].min_free == 0.1


@pytest.mark.parametrize(
    ("checks", "says"),
    [
        ("      - tcp: localhost\n", "expected host:port"),
        ("      - mount: data\n", "expected an absolute path"),
        ("      - mount: /a\n        tcp: a:1\n", "expected exactly one of"),
        ("      - timeout: 5s\n", "expected exactly one of"),
        ("      - disk: {path: /var, min_free: 10}\n", "percentage"),
        ("      - ping: 1.2.3.4\n", "ping"),
    ],
)
def test_bad_checks_are_refused_with_their_line(tmp_path: Path, checks: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, checks)
    assert says in str(caught.value) and ":7:" in str(caught.value), str(caught.value)


def result(state: str, *outcomes: tuple[str, bool, str]) -> ChecksResult:
    return ChecksResult(
        id="checks-1",
        state=state,  # type: ignore[arg-type]
        outcomes=[CheckOutcome(check=c, ok=ok, detail=d) for c, ok, d in outcomes],
    )


@pytest.mark.parametrize(
    ("results", "state", "reason"),
    [
        ({}, "wait", None),
        ({"a": result("running"), "b": result("passed")}, "wait", None),
        ({"a": result("passed", ("mount /", True, "ok")), "b": result("passed")}, "passed", None),
        (
            {"a": result("failed", ("mount /data", False, "/data does not exist")), "b": None},
            "failed",
            "infrastructure check failed, nothing changed: a: mount /data: /data does not exist",
        ),
    ],
)
def test_verdict(results: dict[str, ChecksResult | None], state: str, reason: str | None) -> None:
    assert verdict(["a", "b"], results)[:2] == (state, reason)
