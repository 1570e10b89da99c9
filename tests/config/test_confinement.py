"""`service.user` and `service.limits` in conveyor.yml: what is accepted, and the errors."""

from __future__ import annotations

import pytest

from conveyor.config import ConfigError, parse_config
from conveyor.config.confinement import parse_size

BASE = """\
app: shop
service:
  start: python app.py
  port: 8000
"""


def test_user_and_limits_are_read() -> None:
    config = parse_config(
        BASE + "  user: shop\n  limits: {memory: 512M, cpu: 0.5, files: 65536}\n", "conveyor.yml"
    )
    assert config.service is not None
    assert config.service.user == "shop"
    assert config.service.limits.memory == 512 * 1024**2
    assert config.service.limits.cpu == 0.5
    assert config.service.limits.files == 65536


@pytest.mark.parametrize(
    ("extra", "where", "message"),
    [
        ("  user: root\n", "5:9", "instances must not run as root"),
        ("  user: Web Server\n", "5:9", "expected a user name"),
        ("  limits: {memory: lots}\n", "5:20", "expected a size like 512M or 2G, got 'lots'"),
        ("  limits: {memory: 1K}\n", "5:20", "expected at least 8M of memory"),
        ("  limits: {cpu: 0}\n", "5:17", "service.limits.cpu: expected a number above 0.0"),
        ("  limits: {files: 10}\n", "5:19", "service.limits.files: expected a number at least 64"),
        ("  limits: {mem: 1G}\n", "5:12", "unknown key 'mem', did you mean 'memory'?"),
    ],
)
def test_bad_user_and_limits_say_where(extra: str, where: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + extra, "conveyor.yml")
    said = str(caught.value)
    assert f"conveyor.yml:{where}:" in said, said
    assert message in said, said


@pytest.mark.parametrize(
    ("value", "size"),
    [("512M", 512 * 1024**2), ("1.5G", 3 * 1024**3 // 2), ("2g", 2 * 1024**3), (1 << 24, 1 << 24)],
)
def test_parse_size(value: object, size: int) -> None:
    assert parse_size(value) == size
