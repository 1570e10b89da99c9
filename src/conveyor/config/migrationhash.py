"""What a release's migrations will run, digested (deploy/migrationgate.py says why):
pure functions of its config, used where releases are built (pipeline) and gated (deploy)."""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Mapping

from conveyor.config.models import Config


def commands(config: Config) -> dict[str, str]:
    """The migration commands of a config, by what runs them."""
    m = config.migrations
    found = {"expand": config.expand_command, "contract": m.contract, "backup": m.backup}
    return {k: v for k, v in found.items() if v}


def command_files(config: Config) -> list[str]:
    """The files of the tree the commands run, as written (`./bin/migrate`, `bin/x.sh`):
    each command's first word when it is a relative path."""
    out = []
    for command in commands(config).values():
        try:
            words = shlex.split(command)
        except ValueError:
            continue
        first = words[0] if words else ""
        if "/" in first and not first.startswith(("/", "~", "$")):
            out.append(first)
    return sorted(set(out))


def migration_hash(
    config: Config, *, sql: str | None, files: Mapping[str, str | None], artifact: str
) -> str | None:
    """The content hash of a release's migrations (None: it has none).

    `sql`: sources_digest of what `migrations.sql` prints or lists (None without it);
    `files`: command_files -> sha256 of each (None: not in the tree); `artifact`: the
    release's sha256, which stands for what the commands read when there is no `sql`.
    """
    run = commands(config)
    if "expand" not in run and "contract" not in run:
        return None
    m = config.migrations
    content = {
        "commands": run,
        "lock_timeout": m.lock_timeout,
        "statement_timeout": m.statement_timeout,
        "files": dict(sorted(files.items())),
        "sql": sql if m.sql is not None else None,
        "artifact": artifact if m.sql is None or sql is None else None,
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
