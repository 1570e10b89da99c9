"""A commented starter conveyor.yml, with commands guessed from the repository."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML

from conveyor.config.base import describe
from conveyor.config.values import APP_NAME_PATTERN

_COMMENT_COLUMN = 32
_PLAIN_SAFE = re.compile(r"[A-Za-z0-9./$_][A-Za-z0-9 ./$_=@+,-]*")


@dataclass(frozen=True)
class _Commands:
    test: str
    build: str
    start: str
    note: str  # a comment for the test line: where the guess came from


_PLACEHOLDER = _Commands(
    test="true",
    build="true",
    start="./bin/start",
    note="placeholder: replace with your test command",
)


def _guess(directory: Path | None) -> _Commands:
    if directory is None:
        return _PLACEHOLDER
    markers = ("pyproject.toml", "requirements.txt", "package.json", "Makefile")
    has = {name for name in markers if (directory / name).is_file()}
    if has & {"pyproject.toml", "requirements.txt"}:
        build = (
            "pip install -r requirements.txt --target vendor"
            if "requirements.txt" in has
            else "pip install . --target vendor"
        )
        entry = next(
            (name for name in ("app.py", "main.py", "server.py") if (directory / name).is_file()),
            None,
        )
        start = f"python {entry}" if entry else "python -m app"
        return _Commands("python -m pytest -q", build, start, "guessed from a Python project")
    if "package.json" in has:
        return _Commands("npm test", "npm ci --omit=dev", "npm start", "guessed from package.json")
    if "Makefile" in has:
        return _Commands("make test", "make build", "./bin/start", "guessed from the Makefile")
    return _PLACEHOLDER


def _yaml_scalar(text: str) -> str:
    """text as a YAML scalar that reads back as that string (`true` alone would be a bool)."""
    plain = _PLAIN_SAFE.fullmatch(text) and not text.endswith(" ")
    if plain and YAML(typ="safe", pure=True).load(text) == text:
        return text
    # A JSON string is a valid YAML double-quoted scalar.
    return json.dumps(text)


def suggest_app_name(directory: Path) -> str:
    """An app name derived from a directory name: "My_Shop" -> "my-shop"."""
    name = re.sub(r"[^a-z0-9]+", "-", directory.resolve().name.lower()).strip("-")
    return name or "app"


def starter_config(app: str, directory: Path | None = None) -> str:
    """The text of a commented conveyor.yml for app, which validates as is.

    With a directory, test, build and start commands are guessed from the files in it
    (pyproject.toml or requirements.txt, package.json, Makefile); otherwise they are
    placeholders to replace.
    """
    if not re.fullmatch(APP_NAME_PATTERN, app):
        raise ValueError(
            "expected an app name of lowercase letters, digits and dashes, not starting or "
            f"ending with a dash (like shop or my-app), got {describe(app)}"
        )
    commands = _guess(directory)
    return _TEMPLATE.format(
        app=_padded(app, len("app: ")),
        test=_padded(_yaml_scalar(commands.test), len("  - run: ")),
        build=_yaml_scalar(commands.build),
        start=_padded(_yaml_scalar(commands.start), len("  start: ")),
        note=commands.note,
    )


def _padded(value: str, indent: int) -> str:
    # Keeps the comments lined up; YAML needs at least one space before a '#'.
    return value + " " * max(1, _COMMENT_COLUMN - indent - len(value))


_TEMPLATE = """\
# conveyor.yml: how conveyor tests, builds and deploys this app.
# Check it with `conveyor validate`; `conveyor schema` prints every key it accepts.

app: {app}# lowercase letters, digits and dashes
branch: main                    # only commits on this branch may reach the last environment

test:                           # on every commit, in a clean checkout of exactly that commit
  - run: {test}# {note}
    timeout: 10m
build:                          # once per commit; produces the release artifact
  - run: {build}
artifact:
  include: ["."]                # the whole tree (.git is always left out)
  exclude: ["tests/"]

service:                        # how a release runs on a host, from its release directory
  start: {start}# must listen on $PORT
  port: 8000                    # the public port the router listens on, on every host
  health: {{path: /healthz, interval: 1s, timeout: 30s}}   # any 2xx is healthy
  drain: 30s                    # longest wait for in-flight requests before an old instance stops
  keep_warm: 10m                # the previous release stays running this long, for instant rollback
  keep_warm_releases: 1         # how many previous releases stay warm; older ones stop once drained
  env: {{LOG_LEVEL: info}}
  # secrets: [DATABASE_URL]     # values come from the server's secret store; masked in logs
  #   (or a command the server runs at deployment: - API_KEY: {{command: "vault kv get ..."}})
  # user: my-app               # instances (and hooks.migrate) run as this user on every host
  # limits: {{memory: 512M, cpu: 1, files: 65536}}   # per instance: systemd, else setrlimit

# hooks:                        # run on the host, in the release directory
#   install: ./bin/install      # after unpack, before start

# migrations:                   # schema changes, expand then contract (see the README)
#   expand: ./bin/migrate       # once per deployment, before traffic moves (was hooks.migrate)
#   contract: ./bin/contract    # later, once no host serves or keeps warm an older release
#   backup: ./bin/backup        # run, and must succeed, before any contract
#   sql: alembic upgrade head --sql   # the SQL it will run, linted before the release is built
#   lock_timeout: 10s           # PostgreSQL session limits of the migration (PGOPTIONS)
#   statement_timeout: 1h
#   timeout: 1h                 # the whole command; killed after it

environments:                   # promotion order = this order
  staging:
    hosts: [staging-1]          # agent names, or {{command: ./inventory.sh}} printing them
    verify:                     # after deploy; any failure rolls this environment back
      - http: GET /healthz
        expect: 200
  production:
    hosts: [web-1, web-2]
    # approval: required        # a person approves each deployment (continuous delivery)
    # window: "Mon-Thu 09:00-16:00 Europe/Madrid"   # deploys wait outside it
    strategy: rolling           # rolling | blue-green | canary
    batch: 1                    # rolling: hosts at a time, or "25%"
    # A canary instead of the two lines above, judged by the analysis below:
    # strategy: canary
    # steps: [10, 50, 100]      # percent of traffic on the new release per step
    # step_pause: 2m
    monitor: 10m                # once deployed, the judge watches this long: a breach rolls back
    #   (meanwhile 5% of traffic, up to 30% at low traffic, stays on the previous release
    #   to compare with at the same time; {{duration: 10m, holdback: 5%, holdback_max: 30%}}
    #   says so, holdback: 0% for none)
    analysis:                   # what the judge checks (the canary's steps and the monitor)
      error_rate: 1%            # ceiling for the new release
      # p99: 1s                 # ceiling for the new release
      # compare: baseline       # canary: also fail when clearly worse than the release it replaces
      # margin: 0.5%            # ... by this many more 5xx (percentage points)
      # false_alarms: 1%        # ... the chance of ever failing a twin release, per deployment
      # min_requests: 200       # inconclusive below this; a canary step waits longer
      # advance: early          # canary: move on once the judge is sure (default: step_pause)
      # warmup: 10s             # the new release's first seconds of traffic are not compared
      # source: router          # the routers' counters; or {{prometheus: http://HOST:9090}}

# notify:
#   - url: "json://hooks.example.com/conveyor"   # any Apprise URL (slack://, mailto://, ...)
#     on: [failure, rollback, approval, success]

# flags:                        # feature flags: off in every environment until switched
#   stickiness: cookie:uid      # routers pass each request's answers in X-Conveyor-Flags
#   give_up: 1h                 # a guarded rollout's step unjudged this long after its pause
#   declare:                    # `conveyor flag on|rollout|target APP ENV NAME`
#     - name: new-checkout
#       description: the one-page checkout
#       variants: [{{name: a, weight: 50}}, {{name: b, weight: 50}}]   # percent, adding up to 100
"""

STARTER_CONFIG = starter_config("my-app")
"""A starter conveyor.yml with placeholder commands, for an app called my-app."""
