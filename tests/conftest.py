from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ServerProcess


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A running `conveyor server` on a fresh data directory."""
    proc = ServerProcess(tmp_path / "data").start()
    try:
        yield proc
    finally:
        proc.stop()
        proc.http.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow tests first: xdist hands tests out in this order, and a long module that
    starts last keeps one worker busy while the others sit idle."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("slow") else 1)
