"""Unleash's REGEX operator: Rust `regex` syntax on Python's `re`.

The official SDKs evaluate with Yggdrasil (Rust), whose dialect has POSIX classes and
inline flags anywhere, and refuses look-around and back-references. A pattern Rust
refuses never matches here either.
"""

from __future__ import annotations

import functools
import re

_POSIX = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7F",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1F\\x7F",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_REFUSED = re.compile(r"\(\?<?[=!]|\(\?P=|\\[1-9]|\\k<")
_INLINE = re.compile(r"\(\?([imsxU-]+)\)")


def _posix_classes(pattern: str) -> str | None:
    def replace(match: re.Match[str]) -> str:
        negated, name = match.group(1), match.group(2)
        if negated or name not in _POSIX:
            raise ValueError(name)
        return _POSIX[name]

    try:
        return re.sub(r"\[:(\^?)([a-z]+):\]", replace, pattern)
    except ValueError:
        return None


def _scoped_flags(pattern: str) -> str:
    """Inline flags in the middle of a pattern apply to the rest of their group, as in Rust."""
    match = _INLINE.search(pattern)
    if match is None or match.start() == 0:
        return pattern
    start, end = match.span()
    depth, index = 0, end
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            if depth == 0:
                break
            depth -= 1
        index += 1
    rest = _scoped_flags(pattern[end:index])
    return f"{pattern[:start]}(?{match.group(1)}:{rest}){pattern[index:]}"


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str, case_insensitive: bool) -> re.Pattern[str] | None:
    """The compiled pattern, or None when Rust's regex would refuse it."""
    if _REFUSED.search(pattern):
        return None
    translated = _posix_classes(pattern)
    if translated is None:
        return None
    try:
        return re.compile(_scoped_flags(translated), re.IGNORECASE if case_insensitive else 0)
    except re.error:
        return None
