from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.store.db import database_url
from testbed.postgres import Cluster
from tests.helpers import TEST_CLUSTER_ENV, ServerProcess, running_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A running `conveyor server` on a fresh data directory."""
    with running_server(tmp_path / "data") as proc:
        yield proc


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """This worker's PostgreSQL cluster (testbed/postgres.py), started at its first use."""
    cluster = Cluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session", autouse=os.environ.get("CONVEYOR_TEST_DB") == "postgresql")
def every_server_on_postgresql(pg_cluster: Cluster) -> Iterator[None]:
    """With CONVEYOR_TEST_DB=postgresql, every `conveyor server` the tests start without a
    `--db` of their own gets a new database on this worker's cluster (testbed/helpers.py):
    the whole end-to-end suite, or a file of it, on PostgreSQL."""
    os.environ[TEST_CLUSTER_ENV] = str(pg_cluster.socket_dir)
    yield
    os.environ.pop(TEST_CLUSTER_ENV, None)


@pytest.fixture(scope="module")
def pg_database(pg_cluster: Cluster) -> str:
    """A fresh, empty PostgreSQL database for this test module: its `--db` URL."""
    return pg_cluster.url(pg_cluster.create_database())


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)],
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The SQLAlchemy URL of an empty store, on each engine: a new SQLite file, or the
    module's PostgreSQL database with every table emptied (its schema, if any, kept)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'c.db'}"
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    url: str = request.getfixturevalue("pg_database")
    cluster.empty(url)
    return database_url(url, tmp_path)


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)],
)
def bare_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """`store_url`, without a schema either: for tests of the migrations themselves."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'c.db'}"
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    url: str = request.getfixturevalue("pg_database")
    cluster.empty(url, schema=True)
    return database_url(url, tmp_path)


# Files whose tests each set up their own world and may run on different workers at
# once (the halves of kill-anywhere); the tests of any other file share one worker.
SPREAD_FILES = {"tests/e2e/test_kill_anywhere.py"}


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile`, but a file of SPREAD_FILES is shared out test by test.

    (xdist's own `loadgroup` cannot do it under pytest 9: it renames items through an
    attribute pytest no longer reads.)
    """
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            return nodeid if file in SPREAD_FILES else file

    return FileScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow tests first, those allowed the longest (their timeout) before the others:
    xdist hands files out in this order (given --no-loadscope-reorder: by default it sorts
    files by their number of tests), and a long file that starts last keeps one worker
    busy while the others sit idle."""

    def order(item: pytest.Item) -> tuple[int, float]:
        timeout = item.get_closest_marker("timeout")
        allowed = float(timeout.args[0]) if timeout and timeout.args else 0.0
        return (0 if item.get_closest_marker("slow") else 1, -allowed)

    items.sort(key=order)


# CONVEYOR_TEST_CPU=FILE: each test file's CPU seconds (the worker's own, and the
# processes it has reaped: servers, agents, routers, CLIs and what they ran) appended to
# FILE as "seconds<TAB>file", to find what makes the suite slow on two cores.
_CPU_LOG = os.environ.get("CONVEYOR_TEST_CPU")
_cpu_by_file: dict[str, float] = {}


def _cpu_now() -> float:
    import resource

    own, reaped = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    from testbed.forked import reaped_cpu  # servers and agents forked by the zygote

    return own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime + reaped_cpu()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    if not _CPU_LOG:
        yield
        return
    before = _cpu_now()
    yield
    file = item.nodeid.split("::", 1)[0]
    _cpu_by_file[file] = _cpu_by_file.get(file, 0.0) + _cpu_now() - before


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _CPU_LOG and _cpu_by_file:
        with open(_CPU_LOG, "a") as out:
            for file, seconds in _cpu_by_file.items():
                out.write(f"{seconds:.1f}\t{file}\n")
