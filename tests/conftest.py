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


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups off the items
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each file's tests on one worker, slow files first, those allowed the longest
    (their timeout) before the others.

    Under `--dist loadgroup` a test's xdist_group names its worker's share: by default
    its file, so a module's fleet is set up once; a test marked with a group of its own
    (the halves of kill-anywhere) runs beside the rest of its file. xdist hands the
    groups out in this order (given --no-loadscope-reorder: by default it sorts them by
    their number of tests), and a long one that starts last keeps one worker busy while
    the others sit idle.
    """
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))

    def order(item: pytest.Item) -> tuple[int, float]:
        timeout = item.get_closest_marker("timeout")
        allowed = float(timeout.args[0]) if timeout and timeout.args else 0.0
        return (0 if item.get_closest_marker("slow") else 1, -allowed)

    items.sort(key=order)
