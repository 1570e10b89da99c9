"""A small web app with its own tests and conveyor.yml, for the demo, tests and benchmarks."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

SERVER_PY = '''\
"""The sample app: says hello, tells its release (and DB_QUERY's value), answers /healthz."""
import json
import os
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GREETING = "hello from sample"
_SEEN = [0]  # requests answered (but /healthz)
_LOCK = threading.Lock()


def greeting() -> str:
    return GREETING


def error_rate() -> float:
    """ERROR_RATE, or what the file ERROR_RATE_FILE says once it exists (a release
    that turns bad while it runs)."""
    path = os.environ.get("ERROR_RATE_FILE")
    if path and os.path.exists(path):
        with open(path) as f:
            return float(f.read().strip() or 0)
    return float(os.environ.get("ERROR_RATE", "0"))


def cold_delay() -> float:
    """SLOW_DELAY seconds for each of the first SLOW_REQUESTS requests (a cache or a JIT
    warming up), then none."""
    slow = int(os.environ.get("SLOW_REQUESTS", "0"))
    if slow <= 0:
        return 0.0
    with _LOCK:
        _SEEN[0] += 1
        if _SEEN[0] > slow:
            return 0.0
    return float(os.environ.get("SLOW_DELAY", "0"))


_IDLE = []  # database connections between two requests


def read_database():
    """DB_QUERY's first value, on DATABASE_URL (PostgreSQL, psycopg): the app's tiny real
    use of a database, None without one. A failing query raises (the request fails)."""
    query = os.environ.get("DB_QUERY")
    if not query:
        return None
    import psycopg

    with _LOCK:
        conn = _IDLE.pop() if _IDLE else None
    if conn is None or conn.closed:
        conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)
    try:
        row = conn.execute(query).fetchone()
    except Exception:
        conn.close()
        raise
    with _LOCK:
        _IDLE.append(conn)
    return None if row is None else row[0]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes: with Nagle's algorithm the body waits for the
    # router's ACK of the headers, which a busy keep-alive connection delays (up to 40 ms)
    # and a seldom used one does not, so the release taking more traffic looked slower
    disable_nagle_algorithm = True

    def do_GET(self):
        status = 200
        if self.path == "/healthz":
            status = int(os.environ.get("HEALTH_STATUS", "200"))
            body = b"ok\\n"
        else:
            delay = cold_delay()
            if delay:
                time.sleep(delay)
            if random.random() < error_rate():
                status = 500
            release = os.environ.get("CONVEYOR_RELEASE", "dev")
            answer = {"greeting": greeting(), "release": release}
            try:
                if os.environ.get("DB_QUERY"):
                    answer["db"] = read_database()
            except Exception as exc:
                status, answer["error"] = 500, f"{type(exc).__name__}: {exc}"
            body = (json.dumps(answer) + "\\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
'''

TEST_PY = """\
import unittest

from app.server import greeting


class GreetingTest(unittest.TestCase):
    def test_greeting(self):
        self.assertTrue(greeting().startswith("hello"))


if __name__ == "__main__":
    unittest.main()
"""

CONVEYOR_YML = """\
app: {app}
branch: main

test:
  - name: unit tests
    run: python3 -m unittest discover -s tests -t . -v
    timeout: 2m
build:
  - name: stamp the build
    run: echo "$CONVEYOR_SHA" > BUILD
artifact:
  include: ["."]
  exclude: ["tests/"]

service:
  start: {start}
  port: {port}
  health: {{path: /healthz, interval: 1s, timeout: {health_timeout}}}
  drain: 10s
  keep_warm: {keep_warm}
  env: {env}
"""

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Demo Dev",
    "GIT_AUTHOR_EMAIL": "dev@example.com",
    "GIT_COMMITTER_NAME": "Demo Dev",
    "GIT_COMMITTER_EMAIL": "dev@example.com",
}


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_IDENTITY}
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def sample_config(
    app: str = "sample",
    *,
    port: int = 8000,
    start: str = "python3 app/server.py",
    health_timeout: str = "30s",
    keep_warm: str = "10m",
    health_status: int = 200,
    error_rate: float = 0.0,
    error_rate_file: str = "",
    slow_requests: int = 0,
    slow_delay: float = 0.0,
    extra: str = "",
) -> str:
    """The sample app's conveyor.yml, with the knobs tests turn (port, start, timeouts).

    `extra` is YAML appended as it is: environments, hooks… With `slow_requests`, each
    instance answers its first `slow_requests` requests `slow_delay` seconds late.
    """
    return CONVEYOR_YML.format(
        app=app,
        port=port,
        start=start,
        health_timeout=health_timeout,
        keep_warm=keep_warm,
        env=f"{{HEALTH_STATUS: '{health_status}', ERROR_RATE: '{error_rate}'"
        + (f", ERROR_RATE_FILE: '{error_rate_file}'" if error_rate_file else "")
        + (
            f", SLOW_REQUESTS: '{slow_requests}', SLOW_DELAY: '{slow_delay}'"
            if slow_requests
            else ""
        )
        + "}",
    ) + textwrap.dedent(extra)


def sample_server(greeting: str = "hello from sample") -> str:
    """The sample app's app/server.py, saying `greeting` (a new one makes a visible change)."""
    return SERVER_PY.replace('GREETING = "hello from sample"', f"GREETING = {greeting!r}")


def write_sample_app(repo: Path, app: str = "sample", *, port: int = 8000, extra: str = "") -> str:
    """Create a git repository holding the sample app on `main`; returns the commit sha.

    Files already in `repo` are committed with it; `extra` is appended to its conveyor.yml.
    """
    (repo / "app").mkdir(parents=True, exist_ok=True)
    (repo / "tests").mkdir(exist_ok=True)
    (repo / "app" / "__init__.py").write_text("")
    (repo / "app" / "server.py").write_text(SERVER_PY)
    (repo / "tests" / "__init__.py").write_text("")
    (repo / "tests" / "test_server.py").write_text(TEST_PY)
    (repo / "conveyor.yml").write_text(sample_config(app, port=port, extra=extra))
    if not (repo / ".git").exists():
        git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "sample app")
    return git(repo, "rev-parse", "HEAD")
