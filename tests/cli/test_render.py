"""`conveyor status` shows the judge's last word and its evidence per environment."""

from __future__ import annotations

import io

from rich.console import Console

from conveyor.cli.render import status_view


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
    deployment = {
        "id": 7,
        "kind": "deploy",
        "release": "abc1234-1",
        "state": "failed",
        "steps": [
            {
                "position": 0,
                "kind": "weight",
                "name": "50% of traffic to abc1234-1",
                "state": "failed",
                "judgement": judgement,
            },
        ],
    }
    rows = [
        {
            "app": {"name": "shop", "branch": "main"},
            "active_runs": [],
            "last_run": None,
            "last_release": None,
            "hosts": [],
            "environments": [
                {
                    "name": "production",
                    "strategy": "canary",
                    "release": "old-1",
                    "hosts": [],
                    "deployment": None,
                    "last": deployment,
                },
            ],
        }
    ]
    console = Console(file=io.StringIO(), width=250, color_system=None)
    console.print(status_view(rows))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "judge: fail, 1028 requests" in text
    assert "fail errors vs baseline: 5xx: canary 21/1028 (2.04%)" in text
    assert "pass p99 latency vs baseline" in text
    assert "#7 50% of traffic to abc1234-1" in text
