"""Loading conveyor.yml: YAML in, a validated Config or a ConfigError with line:col out."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from conveyor.config.base import describe
from conveyor.config.errors import ConfigError, ConfigIssue
from conveyor.config.limits import check_text_size, read_config_bytes
from conveyor.config.messages import validation_issues
from conveyor.config.models import Config
from conveyor.config.source import read_yaml

CONFIG_FILENAME = "conveyor.yml"


def load_config(path: Path) -> Config:
    """Read and validate a conveyor.yml file.

    Raises ConfigError listing every problem in its content (a file too large, binary or
    beyond the limits of conveyor.config.limits among them), and OSError (such as
    FileNotFoundError) when the file cannot be read at all.
    """
    name = str(path)
    data = read_config_bytes(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        message = (
            "expected UTF-8 text, found bytes that are not (is it a binary file?): "
            "save conveyor.yml as UTF-8 text"
        )
        raise ConfigError([ConfigIssue(name, line, column, message)]) from None
    return parse_config(text, name)


def parse_config(text: str, filename: str = CONFIG_FILENAME) -> Config:
    """Validate the text of a conveyor.yml; filename is only used in the issues."""
    check_text_size(text, filename)
    data, source = read_yaml(text, filename)
    if data is None:
        message = "the file is empty; expected a mapping with at least app: (like app: shop)"
        raise ConfigError([ConfigIssue(filename, 1, 1, message)])
    if not isinstance(data, dict):
        line, column = source.value(())
        message = (
            f"expected a mapping of keys like app: shop at the top level, got {describe(data)}"
        )
        raise ConfigError([ConfigIssue(filename, line, column, message)])
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_issues(exc, Config, data, source, filename)) from None
