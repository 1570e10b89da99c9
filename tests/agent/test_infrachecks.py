"""Infrastructure checks on a host: the verdicts (tables), and the probes against what this
machine really has (a listening socket, /, a command)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from conveyor.agent.infrachecks import InfraChecks, disk_verdict, mount_verdict, tls_verdict
from conveyor.protocol import ChecksRequest, ChecksResult, InfraCheck

DAY = 86400.0


@pytest.mark.parametrize(
    ("free", "total", "min_free", "ok", "says"),
    [
        (50, 100, 0.1, True, "50.0% free"),
        (10, 100, 0.1, True, "10.0% free"),
        (9, 100, 0.1, False, "below the 10% required"),
        (0, 0, 0.1, False, "0.0% free"),
    ],
)
def test_disk(free: int, total: int, min_free: float, ok: bool, says: str) -> None:
    verdict = disk_verdict(free, total, min_free)
    assert verdict[0] is ok and says in verdict[1]


@pytest.mark.parametrize(
    ("days_left", "min_days", "ok"),
    [(30.0, 14, True), (14.0, 14, True), (13.9, 14, False), (-1.0, 0, False)],
)
def test_tls(days_left: float, min_days: int, ok: bool) -> None:
    assert tls_verdict(1_000_000_000 + days_left * DAY, 1_000_000_000, min_days)[0] is ok


@pytest.mark.parametrize(
    ("exists", "is_mount", "ok", "says"),
    [
        (False, False, False, "does not exist"),
        (True, False, False, "is not a mount point"),
        (True, True, True, "is mounted"),
    ],
)
def test_mount(exists: bool, is_mount: bool, ok: bool, says: str) -> None:
    verdict = mount_verdict(exists, is_mount, "/data")
    assert verdict[0] is ok and says in verdict[1]


def run(checks: list[InfraCheck], tmp_path: Path) -> ChecksResult:
    async def go() -> ChecksResult:
        done = asyncio.Event()
        infra = InfraChecks(lambda app: tmp_path / app / "shared", done.set)
        infra.want([ChecksRequest(id="checks-1", app="shop", checks=checks)])
        await asyncio.wait_for(done.wait(), 30)
        (result,) = infra.results()
        infra.want([])  # taken back: forgotten
        assert infra.results() == []
        return result

    return asyncio.run(go())


def test_the_probes_on_this_machine(tmp_path: Path) -> None:
    with socket.socket() as listening, socket.socket() as closed:
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        result = run(
            [
                InfraCheck(kind="tcp", target=f"127.0.0.1:{listening.getsockname()[1]}"),
                InfraCheck(kind="tcp", target=f"127.0.0.1:{closed.getsockname()[1]}"),
                InfraCheck(kind="mount", target="/"),
                InfraCheck(kind="disk", target="/", min_free=0.0),
                InfraCheck(kind="command", target='echo "$CONVEYOR_APP in $PWD"'),
                InfraCheck(kind="command", target="echo no; exit 3"),
                InfraCheck(kind="command", target="sleep 5", timeout=0.2),
            ],
            tmp_path,
        )
    assert result.state == "failed"
    got = [(o.check, o.ok) for o in result.outcomes]
    assert [ok for _, ok in got] == [True, False, True, True, True, False, False], got
    details = [o.detail for o in result.outcomes]
    assert "cannot connect" in details[1]
    assert details[4] == f"shop in {tmp_path / 'shop' / 'shared'}"
    assert details[5] == "exit 3: no" and "timed out after 0.2s" in details[6]


def test_passing_checks_pass(tmp_path: Path) -> None:
    result = run(
        [InfraCheck(kind="mount", target="/"), InfraCheck(kind="command", target="true")], tmp_path
    )
    assert result.state == "passed" and [o.check for o in result.outcomes] == [
        "mount /",
        "command true",
    ]
