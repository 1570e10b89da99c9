from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ServerProcess, running_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A running `conveyor server` on a fresh data directory."""
    with running_server(tmp_path / "data") as proc:
        yield proc


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow tests first, those allowed the longest (their timeout) before the others:
    xdist hands files out in this order (given --no-loadscope-reorder: by default it sorts
    files by their number of tests), and a long module that starts last keeps one worker
    busy while the others sit idle."""

    def order(item: pytest.Item) -> tuple[int, float]:
        timeout = item.get_closest_marker("timeout")
        allowed = float(timeout.args[0]) if timeout and timeout.args else 0.0
        return (0 if item.get_closest_marker("slow") else 1, -allowed)

    items.sort(key=order)
