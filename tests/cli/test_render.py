"""`conveyor status` shows the judge's last word and its evidence per environment."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console

from conveyor.cli.render import bare, contract_text, history_table, holdback_text, status_view
from conveyor.cli.tables import Column, fitted
from conveyor.cli.watch import step_line, traffic_count, traffic_hint
from conveyor.protocol import DeploymentOut, Holdback, PendingContract, Placement, TrafficWait
from tests.cli.records import (
    app_status,
    deployment_out,
    release_out,
    run_out,
    step_out,
)


def test_status_shows_the_judgement_and_each_check_s_evidence() -> None:
    judgement = {
        "verdict": "fail",
        "requests": 1028,
        "error_rate": 0.0204,
        "p99": 0.05,
        "reasons": ["5xx: canary 21/1028 (2.04%) vs baseline 18/3974 (0.45%): evidence 204"],
        "evidence": [
            {
                "check": "errors vs baseline",
                "verdict": "fail",
                "summary": "5xx: canary 21/1028 (2.04%) vs baseline 18/3974 (0.45%): "
                "evidence 204 ≥ 143",
            },
            {"check": "p99 latency vs baseline", "verdict": "pass", "summary": "slower than 50 ms"},
        ],
    }
    deployment = deployment_out(
        7,
        release="abc1234-1",
        state="failed",
        steps=[step_out(name="50% of traffic to abc1234-1", state="failed", judgement=judgement)],
    )
    rows = [
        app_status(
            environments=[
                {
                    "name": "production",
                    "strategy": "canary",
                    "release": "old-1",
                    "hosts": [],
                    "deployment": None,
                    "last": deployment,
                },
            ],
        )
    ]
    console = Console(file=io.StringIO(), width=250, color_system=None)
    console.print(status_view(rows))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "judge: fail, 1028 requests" in text
    assert "fail errors vs baseline: 5xx: canary 21/1028 (2.04%)" in text
    assert "pass p99 latency vs baseline" in text
    assert "#7 50% of traffic to abc1234-1" in text


# -- 80 columns, or a pipe: tables fit, values whole, copyable lines never wrapped ----------


def _console(width: int) -> Console:
    return Console(file=io.StringIO(), width=width, color_system=None)


def _text(console: Console) -> str:
    return console.file.getvalue()  # type: ignore[attr-defined]


def _deployment(i: int, **over: object) -> DeploymentOut:
    return deployment_out(i, **({"duration": 83.2, "started_at": "2026-12-05T20:53:22"} | over))


HISTORY = [
    _deployment(
        12,
        kind="rollback",
        state="failed",
        reason="not enough traffic to judge the release: 12 of the 100 requests needed in 30 s",
        triggered_by="admin (CONVEYOR_ADMIN_TOKEN)",
    ),
    _deployment(11, environment="staging", approved_by="alice (deployer token)"),
    _deployment(10, state="superseded", reason="superseded by release abc1211-1"),
]


def test_history_fits_80_columns_and_never_cuts_a_value() -> None:
    console = _console(80)
    console.print(history_table(HISTORY, console))
    text = _text(console)
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "…" not in text, text
    for word in ("deployment", "environment", "#12 rollback", "production", "staging"):
        assert word in text, text
    for d in HISTORY:
        assert d.release in text and d.state in text, text
    # the reason wraps onto more lines, whole
    assert "not enough" in text and "in 30 s" in text, text


def test_history_shows_every_column_when_the_terminal_is_wide() -> None:
    console = _console(250)
    console.print(history_table(HISTORY, console))
    text = _text(console)
    for header in ("previous", "took", "trigger", "approved by", "started", "reason"):
        assert header in text, text
    assert "83.2s" in text and "alice (deployer token)" in text and "12-05 20:53" in text


def test_columns_go_least_needed_first_and_free_text_wraps() -> None:
    columns = [
        Column("name"),
        Column("optional", drop=2),
        Column("nice", drop=1),
        Column("note", wrap=True),
    ]
    rows = [["a-long-name-" * 2, "x" * 20, "y" * 20, "words " * 20]]
    widths = {}
    for width in (120, 70, 50):
        console = _console(width)
        console.print(fitted(console, columns, rows))
        widths[width] = _text(console).splitlines()[0].split()
    assert widths[120] == ["name", "optional", "nice", "note"]
    assert widths[70] == ["name", "nice", "note"]
    assert widths[50] == ["name", "note"]


def test_status_fits_80_columns() -> None:
    place = Placement.model_validate(
        {
            "host": "web-1",
            "online": True,
            "converged": False,
            "desired": [
                {"release": "abc1234-12", "weight": 75},
                {"release": "0c67dac-1", "weight": 25},
            ],
            "observed": [
                {"release": "abc1234-12", "weight": 75, "phase": "healthy", "error": None},
                {"release": "0c67dac-1", "weight": 25, "phase": "draining", "error": None},
            ],
            "error": "health check of abc1234-12 failed: connection refused on 127.0.0.3:8000",
        }
    )
    running = _deployment(13, state="running", release="abc1234-12", steps=[])
    rows = [
        app_status(
            last_run=run_out(4),
            last_release=release_out("abc1234-12"),
            hosts=[place],
            environments=[
                {
                    "name": "production",
                    "strategy": "canary",
                    "release": "0c67dac-1",
                    "hosts": [place],
                    "deployment": running,
                    "last": _deployment(9),
                },
            ],
        )
    ]
    console = _console(80)
    console.print(status_view(rows, console))
    text = _text(console)
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "…" not in text, text
    for word in ("abc1234-12", "0c67dac-1", "production", "draining", "web-1", "connection"):
        assert word in text, text


def test_a_copyable_line_is_printed_whole_at_any_width() -> None:
    command = (
        "conveyor agent --server http://conveyor.example.com:8420 --name web-1 "
        "--token cvy_" + "x" * 43 + " --data /var/lib/conveyor-agent"
    )
    console = _console(40)
    bare(f"  {command}", console)
    assert _text(console) == f"  {command}\n"


def test_a_failed_step_says_its_reason_once() -> None:
    reason = "not enough traffic to judge the release: 12 of the 100 requests needed in 30 s"
    step = step_out(
        name="25% of traffic to abc1234-1",
        state="failed",
        duration=30.2,
        reason=reason,
        judgement={
            "verdict": "inconclusive",
            "requests": 12,
            "error_rate": 0.0,
            "p99": 0.02,
            "reasons": ["12 of the 100 requests needed to judge"],
        },
    )
    line = step_line(step)
    assert line.count("12 of the 100") == 1, line
    assert "judge: [yellow]inconclusive[/yellow], 12 requests" in line, line


def test_a_step_waiting_for_traffic_counts_down_and_says_where_to_send_it() -> None:
    wait = TrafficWait.model_validate(
        {
            "requests": 12,
            "needed": 100,
            "until": "2026-12-05T21:00:18+00:00",
            "urls": ["http://127.0.0.3:8000", "http://127.0.0.4:8000"],
        }
    )
    now = datetime(2026, 12, 5, 21, 0, 0, tzinfo=UTC)
    assert traffic_count(wait, now) == "12 of 100 requests, 18 s left"
    assert traffic_count(wait, now + timedelta(minutes=1)) == "12 of 100 requests, 0 s left"
    assert traffic_hint(wait).endswith(
        "send traffic to http://127.0.0.3:8000, http://127.0.0.4:8000"
    )


@pytest.mark.parametrize(
    ("holdback", "said"),
    [
        (
            {"release": "9977d15-1", "share": 5, "until": "2026-12-05T20:34:01Z"},
            "; holdback 5% on 9977d15-1 until 20:34:01 UTC",
        ),
        ({"release": "9977d15-1", "share": 20, "until": None}, "; holdback 20% on 9977d15-1"),
        (None, ""),
    ],
)
def test_a_watch_windows_holdback_is_said_after_the_deployment_underway(
    holdback: dict[str, object] | None, said: str
) -> None:
    assert holdback_text(Holdback.model_validate(holdback) if holdback else None) == said


@pytest.mark.parametrize(
    ("waiting", "said"),
    [
        (None, "; contract of r3 pending: runs first in the next deployment"),
        (
            "the contract of release r3 waits: release r2 (kept warm on web-1), which is older",
            "; contract pending: the contract of release r3 waits: release r2 (kept warm on "
            "web-1), which is older",
        ),
    ],
)
def test_a_pending_contract_says_when_it_runs_or_why_it_waits(
    waiting: str | None, said: str
) -> None:
    contract = PendingContract(release="r3", command="./bin/contract", waiting=waiting)
    assert contract_text(contract) == said
    assert contract_text(None) == ""
