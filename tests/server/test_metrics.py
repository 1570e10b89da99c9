"""The category a rollback is counted under in conveyor_rollbacks_total, from its reason."""

from __future__ import annotations

import pytest

from conveyor.server.metrics import rollback_reason


@pytest.mark.parametrize(
    ("kind", "reason", "category"),
    [
        # reasons as deploy/orchestrator.py and server/api/deployments.py write them
        ("deploy", "analysis failed: error rate 5.00% above the ceiling 1.00%", "analysis"),
        ("deploy", "not enough traffic to judge the release: 12 requests < 200", "analysis"),
        ("deploy", "monitor: p99 2.1 s above 1 s after 100%", "monitor"),
        ("deploy", "check failed: GET /healthz on web-1: 500", "check"),
        ("deploy", "verify failed: ./scripts/smoke.sh exited 1", "verify"),
        ("deploy", "the previous release r1 failed the verify checks on the migrated", "verify"),
        ("deploy", "hooks.migrate failed on web-1 (exit 3):\nno table", "hook"),
        ("deploy", "migrations.expand failed on web-1 (exit 3):\nno table", "hook"),
        ("deploy", "migrations.contract failed on web-1 (exit 1)", "hook"),
        (
            "deploy",
            "host web-2 lost its connection to the server during 'batch 1' (unreachable for "
            "10 s); web-2 not connected: the previous release is written as their desired state",
            "host_offline",
        ),
        ("deploy", "host web-1 was removed during the deployment", "host_offline"),
        ("deploy", "host web-1 is not connected", "host_offline"),
        ("deploy", "release r1-1 failed on web-1: exited with 1 before it was healthy", "health"),
        ("deploy", "host(s) web-1, web-2 did not reach 'batch 1' within 40 s", "health"),
        ("deploy", "aborted by admin", "aborted"),
        ("deploy", "aborted by ci: rollback to r1-1", "aborted"),
        ("deploy", "internal error: boom", "other"),
        ("deploy", None, "other"),
        ("rollback", None, "manual"),
        ("rollback", "verify failed: whatever", "manual"),
    ],
)
def test_rollback_reasons_fall_into_small_categories(
    kind: str, reason: str | None, category: str
) -> None:
    assert rollback_reason(kind, reason) == category
