"""`conveyor run --follow` follows the commit up its promotion chain, on a real fleet."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.fleet import Fleet
from testbed.helpers import ServerProcess

# four deployments on two hosts: generous on a starved machine, still a hang detector
pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

CHAIN = """
environments:
  staging:
    hosts: [stage-1]
  production:
    hosts: [prod-1]
"""

# production's smoke test fails: the release passes staging, then production rolls it back
FAILING_IN_PRODUCTION = (
    CHAIN
    + """    verify:
      - run: echo smoke test failed in production; exit 3
"""
)


@pytest.fixture
def fleet(server: ServerProcess, tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(server, tmp_path, {"stage-1": "127.0.41.1", "prod-1": "127.0.41.2"})
    try:
        yield f.start()
    finally:
        f.stop_everything()


def test_run_follow_ends_with_the_last_environment_or_the_first_failure(fleet: Fleet) -> None:
    server = fleet.server
    fleet.commit("v1", CHAIN)
    good = server.cli("run", "sample", "--follow", timeout=240)
    assert good.returncode == 0, good.stdout + good.stderr
    v1 = server.get("/api/runs/1")["release"]
    out = good.stdout
    assert "run 1 succeeded" in out and f"promotion chain of {v1}: staging → production" in out
    # each environment's deployment as it happens, in the chain's order, with its steps
    staging = out.index(f"of sample to staging: release {v1}")
    assert staging < out.index("staging of sample serves " + v1)
    assert out.index("staging of sample serves") < out.index("to production: release " + v1)
    assert out.rstrip().endswith(f"production of sample serves {v1}"), out
    assert fleet.serving("prod-1") == v1

    fleet.commit("v2", FAILING_IN_PRODUCTION)
    bad = server.cli("run", "sample", "--follow", timeout=240)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    v2 = server.get("/api/runs/2")["release"]
    out = bad.stdout
    assert f"staging of sample serves {v2}" in out, out
    assert "smoke test failed in production" in out, out  # the verify step's log
    assert "failed" in out.splitlines()[-2] and f"roll back 1 host(s) to {v1}: done" in out, out
    assert fleet.serving("prod-1") == v1
