"""conveyor.yml files written to hurt the parser: the cases of issue 20, as bytes.

Each is (name, content, what the error says); the unit tests, `conveyor validate`
and the end-to-end runs all use them.
"""

from __future__ import annotations

import random


def billion_laughs(levels: int = 9) -> str:
    """Each anchor is nine aliases of the one before: 9**9 values from 800 bytes."""
    lines = ["app: shop", "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def nested_brackets(depth: int = 20_000) -> str:
    return "app: shop\nx: " + "[" * depth + "]" * depth + "\n"


def nested_maps(depth: int = 5_000) -> str:
    return "app: shop\nx: " + "{a: " * depth + "1" + "}" * depth + "\n"


def nested_block_maps(depth: int) -> str:
    lines = ["app: shop", "x:"] + [" " * level + "a:" for level in range(1, depth)]
    return "\n".join(lines) + " 1\n"


def large(size: int = 10 * 1024 * 1024) -> str:
    """A valid config padded with comments to `size` bytes."""
    head = "app: shop\ntest:\n  - run: 'true'\n"
    line = "# " + "x" * 97 + "\n"
    return head + line * ((size - len(head)) // len(line))


def binary(size: int = 64 * 1024) -> bytes:
    """Random bytes, as when a binary file is committed under the name conveyor.yml."""
    return random.Random(20).randbytes(size)


# name, content, a phrase of the error
HOSTILE: list[tuple[str, str | bytes, str]] = [
    ("billion laughs", billion_laughs(), "billion laughs"),
    ("20,000 nested brackets", nested_brackets(), "more than 64 levels deep"),
    ("5,000 nested maps", nested_maps(), "more than 64 levels deep"),
    ("10 MB", large(), "over the limit of 1,048,576"),
    ("binary garbage", binary(), "expected UTF-8 text"),
]
