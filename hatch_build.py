"""Builds the router's flags in C (src/conveyor/flags/_line.c) with the package, when a C
compiler and Python's headers are there; without them the package is built as before and
the router evaluates flags in Python (flags/fastline.py), slower, with the same answers.

hatchling runs this for every wheel it builds, editable ones included (`uv sync`): the
module is compiled next to its source, where an editable install imports it, and a
wheel carries it (a wheel for this Python and platform, then: `infer_tag`).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("src/conveyor/flags/_line.c")
FLAGS = ["-O2", "-fPIC", "-Wall", "-Wno-unused-parameter"]


def compile_line(source: Path) -> Path | None:
    """The compiled module, next to its source; None (said on stderr) if it cannot be."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    target = source.with_name("_line" + suffix)
    partial = target.with_name(f".{target.name}.{os.getpid()}")  # two builds at once
    linker = os.environ.get("LDSHARED") or sysconfig.get_config_var("LDSHARED") or "cc -shared"
    command = [
        *shlex.split(linker),
        *FLAGS,
        "-I",
        sysconfig.get_paths()["include"],
        str(source),
        "-o",
        str(partial),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except OSError as exc:
        done = subprocess.CompletedProcess(command, 127, "", str(exc))
    if done.returncode != 0:
        print(
            f"conveyor: the router's flags in C were not built ({' '.join(command)}: "
            f"{done.stderr.strip()[-400:]}); the router evaluates them in Python",
            file=sys.stderr,
        )
        return None
    partial.replace(target)
    return target


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        built = compile_line(Path(self.root) / SOURCE)
        if built is None or version == "editable":
            return  # an editable install imports it where it was built
        build_data["force_include"][str(built)] = f"conveyor/flags/{built.name}"
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
