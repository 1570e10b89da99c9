"""An action's role is read from the API route it stands for."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from conveyor.server.app import Settings, create_app
from conveyor.server.web.session import api_role


def a_request(tmp: Path) -> Any:
    """Enough of a request for api_role: the app (no database is needed to read routes)."""
    return SimpleNamespace(app=create_app(Settings(tmp, "http://x"), None))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("method", "path", "role"),
    [
        ("POST", "/api/runs/{run_id}/approve", "deployer"),
        ("POST", "/api/deployments/{deployment_id}/abort", "deployer"),
        ("POST", "/api/apps/{name}/environments/{env}/rollback", "deployer"),
        ("POST", "/api/apps/{name}/environments/{env}/deploy", "deployer"),
        ("GET", "/api/apps/{name}/environments", "viewer"),
        ("POST", "/api/hosts", "admin"),
    ],
)
def test_api_role_reads_the_route_of_an_included_router(
    tmp_path: Path, method: str, path: str, role: str
) -> None:
    request = a_request(tmp_path)
    assert api_role(request, method, path) == role


def test_an_unknown_route_is_a_lookup_error(tmp_path: Path) -> None:
    request = a_request(tmp_path)
    with pytest.raises(LookupError, match="no API route POST /api/nothing"):
        api_role(request, "POST", "/api/nothing")
