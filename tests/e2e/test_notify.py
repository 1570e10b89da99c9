"""Notifications end to end: real server, agents on 127.0.0.51-53, the sample app, and
local endpoints receiving Apprise json:// POSTs (and one hung, one refusing)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fleet import Fleet, running_fleet
from tests.helpers import ServerProcess, commit, running_server, wait_for
from tests.notify.receivers import Blackhole, Receiver, refusing_url

# several deployments each: generous on a starved machine, still a hang detector
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

HOSTS = {f"web-{i}": f"127.0.0.{50 + i}" for i in range(1, 4)}
ENDED = ("succeeded", "failed", "cancelled", "superseded")
# web-2's instances answer their health check with 500, the others are fine
SICK_ON_WEB_2 = (
    "'case \"$PWD\" in */web-2/*) export HEALTH_STATUS=500;; esac; exec python3 app/server.py'"
)
FAILING_TEST = (
    "import unittest\n\n\nclass Broken(unittest.TestCase):\n"
    "    def test_it(self):\n        self.fail('broken on purpose')\n"
)
PASSING_TEST = (
    "import unittest\n\n\nclass Fine(unittest.TestCase):\n    def test_it(self):\n        pass\n"
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """The server, with three attempts a second apart, each hanging up to 8 s on an
    endpoint that never answers: a dead target is being tried for about 25 s."""
    env = {"CONVEYOR_NOTIFY_TIMEOUT": "16", "CONVEYOR_NOTIFY_RETRY": "1,1"}
    with running_server(tmp_path / "data", env=env) as proc:
        yield proc


@pytest.fixture
def fleet(server: ServerProcess, tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(server, tmp_path, HOSTS) as f:
        yield f


def notify_yaml(*targets: tuple[str, list[str] | None]) -> str:
    lines = ["notify:"]
    for url, on in targets:
        lines.append(f"  - url: {json.dumps(url)}")
        if on is not None:
            lines.append(f"    on: [{', '.join(on)}]")
    return "\n".join(lines) + "\n"


def push(fleet: Fleet, label: str, config: str, **knobs: Any) -> dict[str, Any]:
    fleet.commit(label, config, **knobs)
    run: dict[str, Any] = fleet.server.wait_run(
        fleet.server.post("/api/apps/sample/runs", {})["id"], timeout=120
    )
    return run


def deployment(server: ServerProcess, run: int, env: str, states: tuple[str, ...]) -> Any:
    def found() -> Any:
        for d in server.get(f"/api/deployments?app=sample&environment={env}"):
            if d["run"] == run and d["state"] in states:
                return server.get(f"/api/deployments/{d['id']}")
        return None

    return wait_for(found, timeout=120, interval=0.3)


def notifications(server: ServerProcess) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = server.get("/api/notifications?app=sample&limit=1000")
    return rows


def settled(server: ServerProcess, count: int) -> list[dict[str, Any]]:
    """Wait until `count` notifications exist and none is pending; oldest first."""

    def done() -> list[dict[str, Any]] | None:
        rows = notifications(server)
        if len(rows) >= count and all(r["state"] != "pending" for r in rows):
            return sorted(rows, key=lambda r: r["id"])
        return None

    rows: list[dict[str, Any]] = wait_for(done, timeout=120, interval=0.3)
    return rows


def labelled(body: str) -> dict[str, str]:
    found: dict[str, str] = {}
    label = ""
    for line in body.splitlines():
        head, sep, rest = line.partition(": ")
        if sep and head in ("What", "Where", "Release", "Why", "Done", "Next", "Link"):
            label = head
            found[label] = rest
        elif label:
            found[label] += "\n" + line
    return found


def test_each_event_reaches_each_subscribed_target_exactly_once(fleet: Fleet) -> None:
    server = fleet.server
    with Receiver() as receiver:
        config = (
            "\nenvironments:\n"
            "  staging:\n    hosts: [web-1, web-2]\n    strategy: rolling\n    batch: 1\n"
            "  production:\n    hosts: [web-3]\n    approval: required\n"
        ) + notify_yaml(
            (receiver.url("/all"), ["failure", "rollback", "approval", "success"]),
            (receiver.url("/default"), None),  # failure and rollback
        )

        # v1: staging succeeds (success), production waits for an approval (approval)
        v1 = push(fleet, "v1", config)
        assert v1["state"] == "succeeded", v1
        staged = deployment(server, v1["id"], "staging", ENDED)
        assert staged["state"] == "succeeded", staged
        held = deployment(server, v1["id"], "production", ("waiting",))
        settled(server, 2)
        server.post(f"/api/runs/{v1['id']}/approve")
        shipped = deployment(server, v1["id"], "production", ENDED)
        assert shipped["state"] == "succeeded", shipped

        # a commit whose test fails: its run fails (failure)
        commit(fleet.repo, {"tests/test_broken.py": FAILING_TEST})
        broken = server.wait_run(server.post("/api/apps/sample/runs", {})["id"], timeout=120)
        assert broken["state"] == "failed", broken

        # v3 fails its health check on web-2: staging rolls back by itself (failure+rollback)
        commit(fleet.repo, {"tests/test_broken.py": PASSING_TEST})
        v3 = push(fleet, "v3", config, start=SICK_ON_WEB_2, health_timeout="3s")
        assert v3["state"] == "succeeded", v3
        failed = deployment(server, v3["id"], "staging", ENDED)
        assert failed["state"] == "failed", failed
        assert failed["steps"][-1]["kind"] == "rollback", failed["steps"]

        rows = settled(server, 7)
        wait_for(lambda: len(receiver.received) >= 7, timeout=30)

    # the record: one row per target per event, all sent
    got = [(r["event"], r["target"].rsplit("/", 1)[-1].split("?")[0], r["state"]) for r in rows]
    assert got == [
        ("success", "all", "sent"),  # staging v1
        ("approval", "all", "sent"),  # production v1 waits
        ("success", "all", "sent"),  # production v1, approved
        ("failure", "all", "sent"),  # the run whose test failed
        ("failure", "default", "sent"),
        ("failure,rollback", "all", "sent"),  # staging v3, rolled back
        ("failure,rollback", "default", "sent"),
    ], got

    # what the endpoints received: the same messages, each exactly once (in any order:
    # targets are served concurrently)
    received = sorted((m["path"], m["title"], m["message"]) for m in receiver.received)
    recorded = sorted(
        ("/" + r["target"].split("/")[3].split("?")[0], r["title"], r["body"]) for r in rows
    )
    assert received == recorded
    types = sorted(m["type"] for m in receiver.received)
    assert types == ["failure"] * 4 + ["success"] * 2 + ["warning"], types

    link = f"{server.url}/deployments"
    success, approval, shipped_note, run_note, _, rollback_note, _ = rows
    # success: only the target that asked for it
    assert success["title"] == f"sample staging: release {v1['release']} deployed"
    body = labelled(success["body"])
    assert "hosts web-1, web-2" in body["Where"], body
    assert body["Release"] == f"{v1['release']}, commit {v1['sha'][:7]}", body
    assert body["Link"] == f"{link}/{staged['id']}", body

    # approval: what waits, where, and the command that lets it go
    assert approval["title"] == f"sample production: release {v1['release']} waits for approval"
    body = labelled(approval["body"])
    assert "environment production, hosts web-3" in body["Where"], body
    assert f"conveyor approve {v1['id']}" in body["Next"], body
    assert body["Link"] == f"{link}/{held['id']}", body
    assert labelled(shipped_note["body"])["Link"] == f"{link}/{shipped['id']}"

    # the failed run: which step, which commit, why (with the end of its log), the run's page
    assert run_note["title"] == f"sample: run {broken['id']} failed at test step 'unit tests'"
    body = labelled(run_note["body"])
    assert broken["sha"][:7] in body["What"] and broken["sha"][:7] in body["Release"], body
    assert "test step 'unit tests' failed (exit 1)" in body["Why"], body
    assert "broken on purpose" in body["Why"], body  # from the log's last lines
    assert body["Link"] == f"{server.url}/runs/{broken['id']}", body

    # the automatic rollback: one message carrying both kinds
    assert rollback_note["title"] == (
        f"sample staging: {v3['release']} failed and was rolled back to {v1['release']}"
    )
    body = labelled(rollback_note["body"])
    assert "hosts web-1, web-2" in body["Where"], body
    assert body["Release"] == f"{v3['release']}, commit {v3['sha'][:7]}", body
    assert "web-2" in body["Why"] and body["Why"] in failed["reason"], (body, failed["reason"])
    assert body["Done"] == f"rolled back web-1, web-2 to {v1['release']}", body
    assert body["Link"] == f"{link}/{failed['id']}", body


def _seconds(step: dict[str, Any]) -> float:
    start = datetime.fromisoformat(step["started_at"])
    return (datetime.fromisoformat(step["finished_at"]) - start).total_seconds()


def test_a_dead_endpoint_delays_no_rollback_and_no_other_target(fleet: Fleet) -> None:
    server = fleet.server
    with Receiver() as live, Blackhole() as hung:
        refused = refusing_url()
        config = (
            "\nenvironments:\n"
            "  production:\n    hosts: [web-1, web-2]\n    strategy: rolling\n    batch: 1\n"
        ) + notify_yaml((live.url("/live"), None), (hung.url(), None), (refused, None))
        v1 = push(fleet, "v1", config)
        assert deployment(server, v1["id"], "production", ENDED)["state"] == "succeeded"
        assert notifications(server) == []  # success: nobody asked for it

        # first failure: rolled back while no notification is in flight (the baseline)
        v2 = push(fleet, "v2", config, start=SICK_ON_WEB_2, health_timeout="3s")
        first = deployment(server, v2["id"], "production", ENDED)
        assert first["state"] == "failed", first
        wait_for(lambda: len(live.received) == 1, timeout=30)
        # the live target got it while the dead ones were still at their first attempts
        dead = [r for r in notifications(server) if "/live" not in r["target"]]
        assert [r["state"] for r in dead] == ["pending", "pending"], dead

        # second failure, redeploying the same release, while the dead targets are retried
        path = "/api/apps/sample/environments/production/deploy"
        again = server.post(path, {"release": v2["release"]})
        second = wait_for(
            lambda: (d := server.get(f"/api/deployments/{again['id']}"))["state"] in ENDED and d,
            timeout=120,
        )
        assert second["state"] == "failed", second
        # ... and the hung target was still being tried when it ended
        during = [
            r
            for r in notifications(server)
            if r["deployment"] == first["id"] and f":{hung.port}/" in r["target"]
        ]
        assert [(r["state"], r["attempts"] >= 1) for r in during] == [("pending", True)], during
        wait_for(lambda: len(live.received) == 2, timeout=30)

        rows = settled(server, 6)
        assert len(hung.accepted) == 6  # three attempts for each of two deployments

    # the rollback under dead-endpoint traffic was no slower than the one without
    rollback_alone = _seconds(first["steps"][-1])
    rollback_during = _seconds(second["steps"][-1])
    assert first["steps"][-1]["kind"] == second["steps"][-1]["kind"] == "rollback"
    print(
        f"rollback alone {rollback_alone:.2f} s, "
        f"during dead-endpoint retries {rollback_during:.2f} s"
    )
    # one hung attempt holds a send for 8 s: a rollback waiting on it would be that much
    # slower (a ratio of two sub-second rollbacks is only noise on a loaded machine)
    assert rollback_during < rollback_alone + 4.0, (rollback_alone, rollback_during)

    # queued with the deployment's end, not after a delivery: the rollback's record
    # was never held back by a send
    for d in (first, second):
        ended = datetime.fromisoformat(d["finished_at"])
        for row in (r for r in rows if r["deployment"] == d["id"]):
            queued_after = (datetime.fromisoformat(row["created_at"]) - ended).total_seconds()
            assert queued_after <= rollback_alone, (queued_after, rollback_alone, row)

    # the live target: one message per deployment; the dead ones failed after their retries
    assert [m["path"] for m in live.received] == ["/live", "/live"]
    assert [labelled(m["message"])["Link"] for m in live.received] == [
        f"{server.url}/deployments/{first['id']}",
        f"{server.url}/deployments/{second['id']}",
    ]
    by_state: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_state.setdefault(row["state"], []).append(row)
    assert len(by_state["sent"]) == 2 and len(by_state["failed"]) == 4, rows
    for row in by_state["failed"]:
        assert row["attempts"] == 3, row
        assert row["event"] == "failure,rollback"
        error = row["last_error"].lower()
        port = row["target"].split(":")[2].split("/")[0]
        if port == str(hung.port):
            assert "timed out" in error or "no answer" in error, row
        else:
            assert "refused" in error, row
    logged = [
        json.loads(line)
        for line in server.log().splitlines()
        if line.startswith("{") and "notification failed, giving up" in line
    ]
    assert len(logged) == 4, logged
    assert all(entry["error"] and entry["attempt"] == 3 for entry in logged), logged
