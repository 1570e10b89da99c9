"""Secrets whose value is a command's output, run on the server when a deployment starts.

`conveyor secret set shop DATABASE_URL --command "vault kv get -field=url secret/shop"`:
the command runs with `sh -c`, CONVEYOR_APP and CONVEYOR_ENVIRONMENT set, for at most
COMMAND_TIMEOUT seconds and MAX_OUTPUT bytes of standard output (the value, one
trailing newline dropped). Its output is never shown: not on failure either, since
it may hold the secret. Standard error is discarded for the same reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

COMMAND_TIMEOUT = 30.0
MAX_OUTPUT = 64 * 1024


class SecretCommandError(Exception):
    """A secret's command failed; the message names the secret, never its output."""


async def run_secret_command(
    name: str,
    command: str,
    env: dict[str, str],
    *,
    timeout: float = COMMAND_TIMEOUT,
    limit: int = MAX_OUTPUT,
) -> str:
    """The value a secret's command prints, or SecretCommandError saying why not."""
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, **env},
        start_new_session=True,
    )
    assert proc.stdout is not None
    what = f"the command of secret {name}"
    try:
        async with asyncio.timeout(timeout):
            out = await _read_at_most(proc.stdout, limit + 1)
            if len(out) > limit:
                raise SecretCommandError(
                    f"{what} printed more than {limit // 1024} KiB; expected only the value"
                )
            code = await proc.wait()
    except TimeoutError:
        raise SecretCommandError(f"{what} did not finish within {timeout:g} s") from None
    finally:
        await _reap(proc)
    if code != 0:
        raise SecretCommandError(
            f"{what} exited with status {code} (its output is not shown: it may hold the secret)"
        )
    value = out.decode("utf-8", "replace")
    value = value[:-1] if value.endswith("\n") else value
    if not value:
        raise SecretCommandError(f"{what} printed nothing; expected the value on stdout")
    return value


async def _read_at_most(stream: asyncio.StreamReader, size: int) -> bytes:
    """Up to `size` bytes, fewer only at the end of the stream (one read() may return less
    than it is asked for: a chunk is whatever the pipe held at that moment)."""
    out = bytearray()
    while len(out) < size:
        chunk = await stream.read(size - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Kill the command's process group if it still runs, and wait for it.

    The rest of its output is read (and dropped) first: asyncio stops reading a pipe
    whose buffer is full, and a pipe never read to its end keeps proc.wait() waiting
    for ever. A grandchild that left the group could hold the pipe open: 5 s at most.
    """
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            await proc.communicate()


async def resolve(commands: dict[str, str], app: str, environment: str) -> dict[str, str]:
    """Run each command (one after the other): name -> value."""
    env = {"CONVEYOR_APP": app, "CONVEYOR_ENVIRONMENT": environment}
    values: dict[str, str] = {}
    for name, command in commands.items():
        values[name] = await run_secret_command(name, command, env)
    return values
