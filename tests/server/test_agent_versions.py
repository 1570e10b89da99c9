"""Which agent versions a server accepts: its minor version and the one before."""

from __future__ import annotations

import pytest

from conveyor.protocol.versions import agent_refusal, major_minor


@pytest.mark.parametrize(
    ("server", "agent", "refused"),
    [
        ("0.4.0", "0.4.0", None),
        ("0.4.0", "0.4.7", None),  # a newer patch of the same minor
        ("0.4.3", "0.3.0", None),  # one minor behind
        ("0.4.0", "0.3.9rc1", None),
        ("0.4.0", "0.2.9", "agent 0.2.9 is too old for server 0.4.0"),
        ("0.4.0", "0.5.0", "agent 0.5.0 is newer than server 0.4.0: upgrade the server first"),
        ("1.0.0", "0.9.0", "agent 0.9.0 is too old for server 1.0.0, which accepts agents 1.0.x"),
        ("1.2.0", "2.2.0", "newer than server 1.2.0"),
        ("0.1.0", None, None),  # agents before the header were 0.1.x
        ("0.3.0", None, "agent 0.1.0 (or older) is too old for server 0.3.0"),
        ("0.4.0", "banana", "agent version 'banana' is not a version number"),
        ("dev", "0.0.1", None),  # a build that names no version talks to anyone
    ],
)
def test_agent_refusal(server: str, agent: str | None, refused: str | None) -> None:
    why = agent_refusal(server, agent)
    if refused is None:
        assert why is None
    else:
        assert why is not None and refused in why


def test_the_refusal_says_which_versions_are_accepted() -> None:
    why = agent_refusal("0.4.0", "0.1.0")
    assert why is not None and "accepts agents 0.3.x and 0.4.x" in why


@pytest.mark.parametrize(
    ("version", "parsed"),
    [("0.1.0", (0, 1)), ("1.12", (1, 12)), ("2.0.0.dev3", (2, 0)), ("x.1", None), ("", None)],
)
def test_major_minor(version: str, parsed: tuple[int, int] | None) -> None:
    assert major_minor(version) == parsed
