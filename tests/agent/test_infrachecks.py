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


def test_the_tls_probe_verifies_the_chain_the_name_and_the_days_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(served)
    trusted = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(trusted))

    async def probe(*checks: InfraCheck) -> list[tuple[bool, str]]:
        async def hang_up(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await asyncio.start_server(hang_up, "127.0.0.1", 0, ssl=served)
        port = server.sockets[0].getsockname()[1]
        done = asyncio.Event()
        infra = InfraChecks(lambda app: tmp_path / app, done.set)
        wanted = [c.model_copy(update={"port": port}) for c in checks]
        infra.want([ChecksRequest(id="t", app="shop", checks=wanted)])
        await asyncio.wait_for(done.wait(), 30)
        server.close()
        return [(o.ok, o.detail) for o in infra.results()[0].outcomes]

    # the host trusts a CA of its own (SSL_CERT_FILE, as OpenSSL reads it)
    monkeypatch.setenv("SSL_CERT_FILE", str(trusted))
    ok, short, other_name = asyncio.run(
        probe(
            InfraCheck(kind="tls", target="localhost", min_days=14),
            InfraCheck(kind="tls", target="localhost", min_days=400_000),
            InfraCheck(kind="tls", target="127.0.0.1", min_days=0),
        )
    )
    assert ok[0] and "valid until" in ok[1], ok
    assert not short[0] and "below 400000" in short[1], short
    assert not other_name[0] and "certificate not valid for 127.0.0.1" in other_name[1], other_name

    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "nothing.pem"))  # an unknown CA
    (unknown,) = asyncio.run(probe(InfraCheck(kind="tls", target="localhost")))
    assert not unknown[0] and "certificate not valid for localhost" in unknown[1], unknown
