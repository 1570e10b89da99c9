"""The CLI as users run it: a subprocess talking HTTP to a real server."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from conveyor.cli.client import Client
from conveyor.cli.watch import follow_status
from tests.helpers import ServerProcess, config, make_repo, run_cli


def test_run_follow_streams_steps_and_exit_code_tells_the_result(
    server: ServerProcess, tmp_path: Path
) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    make_repo(good, {"conveyor.yml": config("good", ["echo hello-from-tests"], ["echo built"])})
    make_repo(bad, {"conveyor.yml": config("bad", ["echo about-to-fail; exit 7"])})
    for name, repo in (("good", good), ("bad", bad)):
        added = server.cli("app", "add", name, "--repo", str(repo), "--json")
        assert added.returncode == 0, added.stderr
        assert json.loads(added.stdout)["webhooks"]["github"].endswith(f"/hooks/github/{name}")

    ok = server.cli("run", "good", "--follow")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "hello-from-tests" in ok.stdout
    assert "run 1 succeeded" in ok.stdout and "release" in ok.stdout

    failed = server.cli("run", "bad", "--follow")
    assert failed.returncode == 1
    assert "about-to-fail" in failed.stdout
    assert "failed (exit 7)" in failed.stdout

    as_json = server.cli("run", "good", "--follow", "--json")
    assert as_json.returncode == 0
    assert json.loads(as_json.stdout)["state"] == "succeeded"


def test_logs_status_history_in_text_and_json(server: ServerProcess, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    sha = make_repo(repo, {"conveyor.yml": config("shop", ["echo testing-now"])})
    server.add_app("shop", repo)
    run = server.wait_run(server.post("/api/apps/shop/runs", {})["id"])

    logs = server.cli("logs", str(run["id"]))
    assert logs.returncode == 0 and "testing-now" in logs.stdout
    logs_json = json.loads(server.cli("logs", str(run["id"]), "--json").stdout)
    assert any("testing-now" in s["log"] for s in logs_json["steps"])
    follow = server.cli("logs", str(run["id"]), "--follow")
    assert follow.returncode == 0 and "testing-now" in follow.stdout

    status = json.loads(server.cli("status", "--json").stdout)
    assert status[0]["app"]["name"] == "shop"
    assert status[0]["last_release"]["id"] == run["release"]
    text = server.cli("status", "shop")
    assert "shop" in text.stdout and run["release"] in text.stdout

    # history lists deployments, whether there are any or not: its --json keeps one shape
    assert json.loads(server.cli("history", "shop", "--json").stdout) == []
    none = server.cli("history", "shop")
    assert "no deployments of shop yet" in none.stdout and "--runs" in none.stdout
    history = json.loads(server.cli("history", "shop", "--runs", "--json").stdout)
    assert [h["sha"] for h in history] == [sha]
    table = server.cli("history", "shop", "--runs")
    assert sha[:7] in table.stdout and "succeeded" in table.stdout


def test_bad_usage_and_unknown_names_exit_2(server: ServerProcess) -> None:
    unknown = server.cli("run", "nope")
    assert unknown.returncode == 2 and "unknown app 'nope'" in unknown.stderr
    assert server.cli("logs", "999").returncode == 2
    viewer = server.post("/api/tokens", {"name": "v", "role": "viewer"})["token"]
    denied = server.cli("app", "add", "x", "--repo", "/tmp", token=viewer)
    assert denied.returncode == 2 and "admin role" in denied.stderr
    bad_name = server.cli("app", "add", "Not_Valid", "--repo", "/tmp")
    assert bad_name.returncode == 2
    no_token = run_cli("status", env={"PATH": "/usr/bin:/bin", "CONVEYOR_SERVER": server.url})
    assert no_token.returncode == 2 and "token" in no_token.stderr


def test_unreachable_server_is_a_clear_failure() -> None:
    done = run_cli("status", "--server", "http://127.0.0.1:9", "--token", "x")
    assert done.returncode == 1
    assert "cannot reach the conveyor server" in done.stderr


BROKEN = [
    ("app: shop\ntest:\n  - run: make\n   timeout: 5m\n", 4, 4),
    ("app: shop\ntest:\n  - run: 'unclosed\n", 3, 10),
    ("app: shop\nbuidl: []\n", 2, 1),
    ("app: Shop\n", 1, 6),
    ("test: []\n", 1, 1),
    ("app: shop\nservice:\n  start: x\n  port: eighty\n", 4, 9),
    ("app: shop\nservice:\n  start: x\n  port: 70000\n", 4, 9),
    ("app: shop\ntest:\n  - run: make\n    timeout: ten minutes\n", 4, 14),
    ("app: shop\napp: shop2\n", 2, 1),
    (
        "app: shop\nservice: {start: x, port: 80}\nenvironments:\n  prod:\n    hosts: [a]\n"
        "    strategy: canary\n    steps: [50, 10, 100]\n",
        7,
        17,
    ),
    (
        "app: shop\nservice: {start: x, port: 80}\nenvironments:\n  prod:\n    hosts: [a]\n"
        "    window: 'Mon-Xyz 09:00-16:00 Europe/Madrid'\n",
        6,
        13,
    ),
    (
        "app: shop\nservice: {start: x, port: 80}\nenvironments:\n  prod:\n    hosts: [a]\n"
        "    stratgy: canary\n",
        6,
        5,
    ),
]


@pytest.mark.parametrize(("text", "line", "column"), BROKEN)
def test_validate_reports_line_and_column(
    tmp_path: Path, text: str, line: int, column: int
) -> None:
    path = tmp_path / "conveyor.yml"
    path.write_text(text)
    done = run_cli("validate", str(path), env=_plain_env())
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"conveyor.yml:{line}:{column}:" in done.stderr, done.stderr


def _plain_env() -> dict[str, str]:
    import os

    return {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}


def test_validate_init_and_schema(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\n")
    made = run_cli("init", cwd=tmp_path, env=_plain_env())
    assert made.returncode == 0, made.stderr
    ok = run_cli("validate", str(tmp_path / "conveyor.yml"), env=_plain_env())
    assert ok.returncode == 0 and "ok" in ok.stdout
    again = run_cli("init", cwd=tmp_path, env=_plain_env())
    assert again.returncode == 2 and "already exists" in again.stderr
    missing = run_cli("validate", str(tmp_path / "nope.yml"), env=_plain_env())
    assert missing.returncode == 2
    schema = json.loads(run_cli("schema", env=_plain_env()).stdout)
    assert {"app", "test", "build", "environments"} <= set(schema["properties"])


class _CtrlCAfter(Client):
    """The CLI's own client on the real server; Ctrl-C, which a test cannot press, comes
    after `looks` reads, and `change` runs before the read numbered `change_at`."""

    def __init__(self, server: ServerProcess, looks: int, change_at: int, change: Any) -> None:
        super().__init__(server.url, server.token)
        self.count, self.looks, self.change_at, self.change = 0, looks, change_at, change

    def get(self, path: str, **kwargs: Any) -> Any:
        self.count += 1
        if self.count == self.change_at:
            self.change()
        if self.count > self.looks:
            raise KeyboardInterrupt
        return super().get(path, **kwargs)


def test_output_at_80_columns_and_through_a_pipe(server: ServerProcess, tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    base |= {"CONVEYOR_SERVER": server.url, "CONVEYOR_TOKEN": server.token, "NO_COLOR": "1"}
    for env in ({**base, "COLUMNS": "80"}, base):  # a narrow terminal's width; a pipe's
        name = f"a-host-with-a-long-name-{len(env)}"
        added = run_cli("host", "add", name, env=env)
        assert added.returncode == 0, added.stderr
        command = [line for line in added.stdout.splitlines() if "conveyor agent" in line]
        assert len(command) == 1, added.stdout
        assert re.fullmatch(
            rf"  conveyor agent --server {re.escape(server.url)} --name {name} "
            r"--token cvy_\S+ --data /var/lib/conveyor-agent",
            command[0],
        ), added.stdout
        created = run_cli("token", "create", f"ci-{len(env)}", "--role", "viewer", env=env)
        token = created.stdout.split(": ")[-1].strip()
        works = run_cli("status", env={**env, "CONVEYOR_TOKEN": token})
        assert works.returncode == 0, created.stdout + works.stderr

    repo = tmp_path / "repo"
    make_repo(repo, {"conveyor.yml": config("shop", ["true"])})
    app = run_cli("app", "add", "shop", "--repo", str(repo), env=base)
    hooks = [line.split() for line in app.stdout.splitlines() if "/hooks/" in line]
    assert [h[1] for h in hooks] == [
        f"{server.url}/hooks/{p}/shop" for p in ("github", "gitlab", "gitea")
    ]

    # piped, `status --follow` prints the status again only when what it shows changed
    console = Console(file=io.StringIO(), width=80, color_system=None)
    assert not console.is_terminal
    client = _CtrlCAfter(server, looks=8, change_at=4, change=lambda: server.add_app("cart", repo))
    try:
        follow_status(client, None, console, as_json=False, interval=0.05)
    finally:
        client._http.close()  # the CLI's process would end here
    text = console.file.getvalue()  # type: ignore[attr-defined]
    rules = [i for i, line in enumerate(text.splitlines()) if line.startswith("────")]
    assert client.count == 9 and len(rules) == 2, text
    assert "cart" in text.splitlines()[rules[1] + 2], text
    assert all(len(line) <= 80 for line in text.splitlines()), text
