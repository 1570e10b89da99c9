"""What hooks and instances share when they run: their environment, their log's tail."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# Only these pass from the agent's own environment to an app's processes: the agent's
# (its token, CONVEYOR_* settings) must not leak into an app.
INHERITED_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def process_env(*layers: Mapping[str, str]) -> dict[str, str]:
    """A clean environment: the few inherited variables, then each layer over the previous."""
    env = {key: os.environ[key] for key in INHERITED_ENV if key in os.environ}
    env.setdefault("PATH", DEFAULT_PATH)
    for layer in layers:
        env.update(layer)
    return env


def log_tail(path: Path, lines: int = 20, since: int = 0, max_bytes: int = 8192) -> str:
    """The last lines of a log file written after byte offset `since` ('' if none)."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            start = max(since, size - max_bytes)
            fh.seek(start)
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    if start > since:
        # we started mid-line: drop the partial first line
        text = text.partition("\n")[2]
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def indent(text: str, prefix: str = "  | ") -> str:
    if not text:
        return f"{prefix}(no output)"
    return "\n".join(prefix + line for line in text.splitlines())
