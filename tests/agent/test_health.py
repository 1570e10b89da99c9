from __future__ import annotations

import time
from pathlib import Path

from conveyor.agent.health import probe, wait_healthy
from conveyor.agent.supervisor import Supervisor
from tests.agent.conftest import APP_COMMAND, HttpServer, Route
from tests.helpers import free_port


async def test_healthy_once_a_2xx_comes(http_server: HttpServer) -> None:
    answers = iter([503, 500, 204])
    http_server.routes["/healthz"] = lambda: Route(status=next(answers, 204))
    result = await wait_healthy("127.0.0.1", http_server.port, "/healthz", 0.05, 5)
    assert result.ok
    assert (result.attempts, result.status, result.error) == (3, 204, None)
    assert "healthy after 3 check(s)" in result.detail


async def test_500_forever_times_out_with_the_last_status(http_server: HttpServer) -> None:
    http_server.routes["/healthz"] = Route(status=500, body=b"boom")
    started = time.monotonic()
    result = await wait_healthy("127.0.0.1", http_server.port, "healthz", 0.1, 0.8)
    elapsed = time.monotonic() - started
    assert not result.ok
    assert 0.8 <= elapsed < 1.5
    assert result.status == 500 and result.aborted is None
    # retried at its interval until the timeout: never faster; a busy machine may fit fewer
    assert 2 <= result.attempts <= 10
    assert result.detail.endswith("last check: HTTP 500")


async def test_nothing_listening_reports_the_connection_error() -> None:
    port = free_port()
    result = await wait_healthy("127.0.0.1", port, "/healthz", 0.1, 0.3)
    assert not result.ok and result.status is None
    assert result.error is not None and result.error.startswith("ConnectError")
    assert f"http://127.0.0.1:{port}/healthz not healthy" in result.detail


async def test_a_redirect_is_not_healthy(http_server: HttpServer) -> None:
    http_server.routes["/up"] = Route(status=301, headers={"Location": "/elsewhere"})
    http_server.routes["/ok"] = Route(status=299)
    moved = await probe("127.0.0.1", http_server.port, "/up")
    assert (moved.ok, moved.status) == (False, 301)
    odd = await probe("127.0.0.1", http_server.port, "/ok")
    assert (odd.ok, odd.status) == (True, 299)


async def test_stops_early_when_the_process_died(data: Path, app_dir: Path) -> None:
    async with Supervisor(data, poll_interval=0.05, startup_window=0.1) as sup:
        # the process lives long enough for checks to fail first, even on a loaded machine
        # where building the HTTP client alone can take a few tenths of a second
        inst = await sup.start("shop", "r1", app_dir, "sleep 1.5; echo dying; exit 7", {})
        started = time.monotonic()
        result = await wait_healthy(
            "127.0.0.1", inst.port, "/healthz", 0.1, 20, should_abort=lambda: sup.exit_reason(inst)
        )
        # stopped by the death (at 1.5 s), long before the 20 s the wait allowed
        assert time.monotonic() - started < 4
        assert not result.ok
        assert result.aborted is not None and "exit code 7" in result.aborted
        assert result.attempts >= 1 and "ConnectError" in result.detail
        await sup.stop(inst, grace=1)


async def test_a_real_instance_becomes_healthy(data: Path, app_dir: Path) -> None:
    async with Supervisor(data, poll_interval=0.05, startup_window=0.1) as sup:
        inst = await sup.start("shop", "r1", app_dir, APP_COMMAND, {})
        result = await wait_healthy(
            "127.0.0.1",
            inst.port,
            "/healthz",
            interval=0.05,
            timeout=10,
            should_abort=lambda: not sup.is_running(inst),
        )
        assert result.ok and result.status == 200
        await sup.stop(inst, grace=5)
