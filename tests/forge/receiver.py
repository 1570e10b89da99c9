"""A local forge API for tests: takes commit statuses the way GitHub, GitLab and Gitea
document them, and keeps each request with what was wrong with it.

One HTTP server, one path prefix per forge (/github, /gitlab/api/v4, /gitea/api/v1).
Each request is checked against its forge's documented endpoint: the path, the
authentication header, the JSON fields and the states that forge accepts. A wrong
token gets the 401 the forge would answer; any other mistake a 422 and a `problems`
entry the test asserts empty.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from testbed.helpers import free_port

STATES = {
    # docs.github.com/en/rest/commits/statuses#create-a-commit-status
    "github": {"error", "failure", "pending", "success"},
    # docs.gitlab.com/api/commits/#set-the-pipeline-status-of-a-commit
    "gitlab": {"pending", "running", "success", "failed", "canceled"},
    # gitea's swagger: repoCreateStatus, CreateStatusOption.state
    "gitea": {"pending", "success", "error", "failure", "warning"},
}
PATHS = {
    "github": re.compile(
        r"^/github/repos/(?P<project>[^/]+/[^/]+)/statuses/(?P<sha>[0-9a-f]{40})$"
    ),
    "gitlab": re.compile(
        r"^/gitlab/api/v4/projects/(?P<project>[^/]+)/statuses/(?P<sha>[0-9a-f]{40})$"
    ),
    "gitea": re.compile(
        r"^/gitea/api/v1/repos/(?P<project>[^/]+/[^/]+)/statuses/(?P<sha>[0-9a-f]{40})$"
    ),
}
LABEL = {"github": "context", "gitlab": "name", "gitea": "context"}


@dataclass
class Posted:
    forge: str
    project: str
    sha: str
    body: dict[str, Any]
    status: int


@dataclass
class ForgeAPI:
    """The receiver; `token` is the one it accepts, for every forge."""

    host: str
    token: str
    posted: list[Posted] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.port = free_port(self.host)
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length)
                status, reply = api.take(self.path, dict(self.headers.items()), raw)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((self.host, self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.lock = threading.Lock()

    def base(self, forge: str) -> str:
        """The API base URL an app of this forge is given (`forge_api`)."""
        prefix = {"github": "/github", "gitlab": "/gitlab/api/v4", "gitea": "/gitea/api/v1"}
        return f"http://{self.host}:{self.port}{prefix[forge]}"

    def take(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, Any]]:
        lower = {k.lower(): v for k, v in headers.items()}
        forge = path.split("/")[1]
        match = PATHS.get(forge, re.compile("^$")).match(path)
        if match is None:
            return self._problem(f"no such endpoint: POST {path}")
        given = {
            "github": lower.get("authorization", ""),
            "gitlab": lower.get("private-token", ""),
            "gitea": lower.get("authorization", ""),
        }[forge]
        wanted = {
            "github": f"Bearer {self.token}",
            "gitlab": self.token,
            "gitea": f"token {self.token}",
        }
        if given != wanted[forge]:
            if given.split(" ")[0] != wanted[forge].split(" ")[0] and forge != "gitlab":
                return self._problem(f"{forge}: wrong authorization scheme {given.split(' ')[0]!r}")
            self._record(forge, match, {}, 401)
            return 401, {"message": "Bad credentials"}
        if not lower.get("content-type", "").startswith("application/json"):
            return self._problem(f"{forge}: content-type {lower.get('content-type')!r}")
        try:
            body = json.loads(raw)
        except ValueError:
            return self._problem(f"{forge}: body is not JSON")
        wrong = self.check_body(forge, body)
        if wrong:
            return self._problem(f"{forge}: {wrong}")
        self._record(forge, match, body, 201)
        return 201, {"id": len(self.posted), "state": body["state"]}

    @staticmethod
    def check_body(forge: str, body: Any) -> str | None:
        if not isinstance(body, dict):
            return "body is not an object"
        if body.get("state") not in STATES[forge]:
            return f"state {body.get('state')!r} is not one of {sorted(STATES[forge])}"
        for key in ("target_url", "description", LABEL[forge]):
            if not isinstance(body.get(key), str) or not body[key]:
                return f"{key} missing"
        extra = set(body) - {"state", "target_url", "description", LABEL[forge]}
        if extra:
            return f"fields the API does not take: {sorted(extra)}"
        if forge == "github" and len(body["description"]) > 140:
            return "description longer than 140 characters"
        return None

    def _record(self, forge: str, match: re.Match[str], body: dict[str, Any], status: int) -> None:
        with self.lock:
            self.posted.append(Posted(forge, match["project"], match["sha"], body, status))

    def _problem(self, text: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.problems.append(text)
        return 422, {"message": text}

    def of(self, forge: str, sha: str) -> list[Posted]:
        with self.lock:
            return [p for p in self.posted if p.forge == forge and p.sha == sha]

    def __enter__(self) -> ForgeAPI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
