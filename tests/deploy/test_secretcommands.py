"""Secrets from a command: the value is its stdout; failures say why, never what it printed."""

from __future__ import annotations

import asyncio

import pytest

from conveyor.deploy.secretcommands import SecretCommandError, resolve, run_secret_command

LEAK = "Ll5-printed-before-failing"


def test_the_value_is_stdout_without_its_last_newline_with_the_environment_named() -> None:
    values = asyncio.run(
        resolve(
            {
                "A": 'printf "%s-%s\\n" "$CONVEYOR_APP" "$CONVEYOR_ENVIRONMENT"',
                "B": "printf 'x\\n\\n'",
            },
            "shop",
            "production",
        )
    )
    assert values == {"A": "shop-production", "B": "x\n"}


@pytest.mark.parametrize(
    ("command", "limits", "why"),
    [
        (f"echo {LEAK}; echo {LEAK} >&2; exit 4", {}, "exited with status 4 (its output is not"),
        ("true", {}, "printed nothing; expected the value on stdout"),
        (f"echo {LEAK}; sleep 30", {"timeout": 0.5}, "did not finish within 0.5 s"),
        ("yes Ll5-printed-before-failing", {"limit": 1024}, "printed more than 1 KiB"),
        # the first read gets one byte: the rest must still be read up to the limit (it
        # was not, once: the pipe filled, and waiting for the command hung for ever)
        (
            "printf L; sleep 0.3; yes Ll5-printed-before-failing",
            {"limit": 1024, "timeout": 20},
            "printed more than 1 KiB",
        ),
    ],
)
def test_a_failing_command_names_the_secret_and_never_its_output(
    command: str, limits: dict[str, float], why: str
) -> None:
    with pytest.raises(SecretCommandError) as failed:
        asyncio.run(run_secret_command("DB", command, {}, **limits))  # type: ignore[arg-type]
    message = str(failed.value)
    assert message.startswith("the command of secret DB ") and why in message
    assert LEAK not in message
