"""An action's role is read from the API route it stands for."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from conveyor.server.app import Settings, create_app
from conveyor.server.web.session import api_role


@pytest.fixture(scope="module")
def request_() -> Any:
    app = create_app(Settings(Path("/nonexistent"), "http://127.0.0.1"), None)  # type: ignore[arg-type]
    return SimpleNamespace(app=app)


@pytest.mark.parametrize(
    ("method", "path", "role"),
    [
        ("POST", "/api/runs/{run_id}/abort", "deployer"),
        # the environment page's buttons
        ("POST", "/api/runs/{run_id}/approve", "deployer"),
        ("POST", "/api/deployments/{deployment_id}/abort", "deployer"),
        ("POST", "/api/apps/{name}/environments/{env}/rollback", "deployer"),
        ("POST", "/api/apps/{name}/environments/{env}/deploy", "deployer"),
        ("PATCH", "/api/apps/{name}", "admin"),
        ("GET", "/api/runs/{run_id}", "viewer"),
    ],
)
def test_the_role_of_an_api_route(request_: Any, method: str, path: str, role: str) -> None:
    assert api_role(request_, method, path) == role


def test_an_unknown_route_has_no_role(request_: Any) -> None:
    with pytest.raises(LookupError):
        api_role(request_, "DELETE", "/api/runs/{run_id}/abort")
