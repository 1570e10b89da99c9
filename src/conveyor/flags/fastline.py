"""The router's fast path: a user's header value from compiled flags, as one generated
Python expression.

A router evaluates every flag for each user it has not answered yet (flags.header keeps
the answers of the users it has). Looping over 20 flags' plans costs more than the hashes
themselves, so FastLine writes the evaluation out once per set of flags: one expression
per flag, the constants (answers, hash prefixes, percentages) bound by position, never
written into the source, so a flag's name or value cannot change the code. The same
answers as CompiledFlag.answer, byte for byte (tests/flags/test_compiled.py).

Where the package was built with its C part (flags/_line.c, compiled by hatch_build.py
when a C compiler is there), flags that a user id alone decides by hashes and lists (no
answer at random, no constraint on the id) are answered by it instead, from the same
constants: about ten times quicker; else by the generated expression.
"""

from __future__ import annotations

from typing import Any

import mmh3

try:
    from ._line import Line
except ImportError:  # installed from source without a C compiler: the expression alone
    Line = None  # type: ignore[assignment,misc]

from .compiled import CompiledFlag
from .hashing import VARIANT_SEED

__all__ = ["FastLine"]


class _Source:
    """The expression's constants, named by position (k0, k1 …: the generated function's
    closure, quicker to read than a global or an index)."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def ref(self, value: Any) -> str:
        self.values.append(value)
        return f"k{len(self.values) - 1}"


def _flag(f: CompiledFlag, k: _Source) -> str:
    """One flag's answer as an expression of `user` (str) and `raw` (its UTF-8 bytes)."""
    name = f.name.encode()
    off, on = name + b"=off", name + b"=on"
    weighted = [(n, w) for n, w in f.variants if w > 0]
    if not f.enabled or (not f.always and not f.users and f.rollout <= 0):
        return k.ref(off)
    if f.rollout_by == "random" or (weighted and not f.variant_by_user):
        return f"{k.ref(f.answer)}(user).encode('latin-1', 'replace')"  # at random
    if weighted:
        # the first variant whose running weight reaches the bucket 1..total
        bucket = (
            f"(x := h({k.ref(name + b':')} + raw, {VARIANT_SEED}) % {sum(w for _, w in weighted)})"
        )
        running, choices = 0, []
        for i, (variant, weight) in enumerate(weighted):
            running += weight
            answer = k.ref(name + b"=" + variant.encode("latin-1", "replace"))
            if i == len(weighted) - 1:
                choices.append(answer)
            else:
                test = bucket if i == 0 else "x"
                choices.append(f"{answer} if {test} < {running} else ")
        chosen = "(" + "".join(choices) + ")"
    else:
        chosen = k.ref(on)
    if f.always:
        return chosen
    taken: list[str] = []
    if f.users:
        taken.append(f"user in {k.ref(f.users)}")
    if f.rollout > 0:
        rolled = [f"h({k.ref(f.group.encode() + b':')} + raw, 0) % 100 < {f.rollout}"]
        if f.constraints:
            rolled.insert(0, f"all(c.satisfied(user) for c in {k.ref(f.constraints)})")
        taken.append("(" + " and ".join(rolled) + ")")
    return f"({chosen} if {' or '.join(taken)} else {k.ref(off)})"


def _expression(flags: list[CompiledFlag]) -> Any:
    """The flags' answers as one generated function of (user, raw)."""
    k = _Source()
    items = "".join(f"{_flag(f, k)}, " for f in flags)
    names = "".join(f"k{i}, " for i in range(len(k.values)))
    unpack = f"    {names}= K\n" if names else ""
    body = f"    return lambda user, raw: sep.join(({items}))\n"
    source = f"def make(K, h, sep):\n{unpack}{body}"
    scope: dict[str, Any] = {}
    exec(compile(source, "<conveyor flags>", "exec"), scope)
    return scope["make"](tuple(k.values), mmh3.mmh3_32_uintdigest, b"; ")


Plan = tuple[bytes, frozenset[bytes] | None, bool, int, bytes, bytes, int, tuple[Any, ...]]


def plan(f: CompiledFlag) -> Plan | None:
    """One flag as the C part's constants: (off, ids always taken, taken by everyone,
    rollout percent, `group:`, `name:`, the variants' total weight, ((running weight,
    answer) …)); None if its answer needs Python (random, constraints on the id)."""
    name = f.name.encode()
    off, on = name + b"=off", name + b"=on"
    weighted = [(n, w) for n, w in f.variants if w > 0]
    if not f.enabled or (not f.always and not f.users and f.rollout <= 0):
        return (off, None, True, 0, b"", b"", 0, ((0, off),))
    if f.rollout_by == "random" or (weighted and not f.variant_by_user):
        return None
    if not f.always and f.rollout > 0 and f.constraints:
        return None
    running, choices = 0, []
    for variant, weight in weighted:
        running += weight
        choices.append((running, name + b"=" + variant.encode("latin-1", "replace")))
    users = frozenset(u.encode() for u in f.users) or None
    group = f.group.encode() + b":"
    return (
        off,
        users,
        f.always,
        f.rollout,
        group,
        name + b":",
        running,
        tuple(choices) or ((0, on),),
    )


class FastLine:
    """The header value of compiled flags for a user id (a non-empty string), about
    2.5 µs for 20 flags here (0.3 µs in C); a request without one is answered by
    CompiledFlag.answer. `native`, when the C part answers these flags: its `header(id)`
    and `cookie_header(cookie, b"uid=")` give the whole line, `head` + answers + `tail`;
    `counted(id)` that line and the answers of the `guarded` flags."""

    def __init__(
        self,
        flags: list[CompiledFlag],
        head: bytes = b"",
        tail: bytes = b"",
        guarded: frozenset[str] = frozenset(),
    ) -> None:
        plans = [plan(f) for f in flags]
        self.native = (
            Line(
                tuple(plans),
                VARIANT_SEED,
                head,
                tail,
                tuple(i for i, f in enumerate(flags) if f.name in guarded),
            )
            if Line is not None and None not in plans
            else None
        )
        self._line = None if self.native is not None else _expression(flags)

    def line(self, user: str) -> bytes:
        """`a=on; b=off; c=x` for this user id."""
        if self._line is None:
            assert self.native is not None
            return self.native(user.encode())
        line: bytes = self._line(user, user.encode())
        return line
