"""Confine this process, then become the instance: `conveyor.agent.confine` puts it
before an instance's command when systemd does not run the host (or for LimitNOFILE,
which a systemd scope lacks). It imports nothing heavy: it runs at every start.

    python -m conveyor.agent.execas [--files N] [--memory BYTES] [--cgroup DIR]
        [--uid UID --gid GID --groups G,G] -- COMMAND...
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
from pathlib import Path
from typing import NoReturn

EXIT_CONFINE_FAILED = 126  # as a shell's "found but cannot execute"


def main(argv: list[str] | None = None) -> NoReturn:
    """Confine this process, then execute the command in it (the pid stays the same)."""
    parser = argparse.ArgumentParser(prog="python -m conveyor.agent.execas")
    parser.add_argument("--files", type=int)
    parser.add_argument("--memory", type=int)
    parser.add_argument("--cgroup", type=Path)
    parser.add_argument("--uid", type=int)
    parser.add_argument("--gid", type=int)
    parser.add_argument("--groups", default="")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    step = "setting its limits"
    try:
        if args.files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (args.files, args.files))
        if args.memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (args.memory, args.memory))
        if args.cgroup is not None:
            step = f"joining cgroup {args.cgroup}"
            (args.cgroup / "cgroup.procs").write_text(str(os.getpid()))
        if args.uid is not None:
            step = f"switching to uid {args.uid}"
            os.setgroups([int(g) for g in args.groups.split(",") if g])
            os.setgid(args.gid if args.gid is not None else args.uid)
            os.setuid(args.uid)
        step = f"executing {args.command[0]}"
        os.execvp(args.command[0], args.command)
    except OSError as exc:
        print(f"conveyor: cannot start the instance: {step} failed: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFINE_FAILED)


if __name__ == "__main__":
    main()
