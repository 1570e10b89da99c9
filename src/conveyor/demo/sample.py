"""A small web app with its own tests and conveyor.yml, for the demo, tests and benchmarks."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SERVER_PY = '''\
"""The sample app: says hello, tells its release, answers /healthz."""
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GREETING = "hello from sample"


def greeting() -> str:
    return GREETING


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/healthz":
            body = b"ok\\n"
        else:
            release = os.environ.get("CONVEYOR_RELEASE", "dev")
            body = (json.dumps({"greeting": greeting(), "release": release}) + "\\n").encode()
        self.send_response(200)
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
  start: python3 app/server.py
  port: 8000
  health: {{path: /healthz, interval: 1s, timeout: 30s}}
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


def write_sample_app(repo: Path, app: str = "sample") -> str:
    """Create a git repository holding the sample app on `main`; returns the commit sha."""
    (repo / "app").mkdir(parents=True, exist_ok=True)
    (repo / "tests").mkdir(exist_ok=True)
    (repo / "app" / "__init__.py").write_text("")
    (repo / "app" / "server.py").write_text(SERVER_PY)
    (repo / "tests" / "__init__.py").write_text("")
    (repo / "tests" / "test_server.py").write_text(TEST_PY)
    (repo / "conveyor.yml").write_text(CONVEYOR_YML.format(app=app))
    if not (repo / ".git").exists():
        git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "sample app")
    return git(repo, "rev-parse", "HEAD")
