"""The router's flags in C (flags/_line.c): the Unleash hash as mmh3 has it, the same
answers as the evaluator for ids as requests send them, and the cookie read as in Python."""

from __future__ import annotations

import random
import shutil
import sysconfig
from typing import Any

import mmh3
import pytest

from conveyor.flags import Context, FlagSet, fastline
from conveyor.flags.compiled import compile_document
from conveyor.flags.definition import NamedFlag, to_document
from conveyor.flags.fastline import FastLine
from conveyor.flags.hashing import VARIANT_SEED
from conveyor.flags.header import RequestFlags, _cookie_value, header_value
from conveyor.protocol.flags import FlagState

from .test_compiled import STATES

HEAD, TAIL = b"X-Conveyor-Flags: ", b"\r\n"
# every flag of test_compiled's but those with constraints on the user id (Python's)
NATIVE = {
    n: s for n, s in STATES.items() if n not in ("user-suffix", "not-listed", "suffix-rollout")
}

pytestmark = pytest.mark.skipif(
    fastline.Line is None and not shutil.which((sysconfig.get_config_var("CC") or "cc").split()[0]),
    reason="no C compiler: the package was built without flags/_line.c",
)


def _flags(states: dict[str, dict[str, Any]]) -> Any:
    return to_document([NamedFlag(n, "", FlagState.model_validate(s)) for n, s in states.items()])


def test_it_is_built_where_a_c_compiler_is() -> None:
    # a broken build would pass every other test here through the Python fallback
    assert fastline.Line is not None


def test_its_murmur3_is_mmh3s() -> None:
    from conveyor.flags._line import murmur3

    rng = random.Random(7)
    for size in range(70):
        for seed in (0, VARIANT_SEED, rng.randrange(2**32)):
            data = rng.randbytes(size)
            assert murmur3(data, seed) == mmh3.hash(data, seed, signed=False), (data, seed)


def test_it_answers_as_the_evaluator_for_ids_as_requests_send_them() -> None:
    document = _flags(NATIVE)
    full = FlagSet(document)
    fast = FastLine(compile_document(document), HEAD, TAIL)
    assert fast.native is not None
    rng = random.Random(3)
    for raw in (b"u-3", b"\xfc-9", b"u-7", b"\xfc"):  # listed ids ("ids-only": "ü-9")
        user = raw.decode("latin-1")
        expected = header_value(full, Context(user_id=user)).encode()
        assert fast.native.header(raw) == HEAD + expected + TAIL, raw
    for i in range(3000):
        # ASCII, bytes from 0x80 (read as Latin-1, hashed as UTF-8), and ids of every length
        raw = (
            f"u-{i}".encode() if i % 5 else bytes(rng.randrange(1, 256) for _ in range(1 + i % 97))
        )
        user = raw.decode("latin-1")
        expected = header_value(full, Context(user_id=user)).encode("latin-1", "replace")
        assert fast.native.header(raw) == HEAD + expected + TAIL, raw
        assert fast.line(user) == expected


def test_a_long_id_and_many_flags_take_the_heap() -> None:
    states = {f"f{i:02}": NATIVE[name] for i, name in enumerate(list(NATIVE) * 8)}
    document = _flags(states)
    full, fast = FlagSet(document), FastLine(compile_document(document), HEAD, TAIL)
    assert fast.native is not None and len(states) > 64
    for user in ("u-1", "ü" * 700, "x" * 5000):
        expected = header_value(full, Context(user_id=user)).encode()
        assert fast.native(user.encode()) == expected


@pytest.mark.parametrize(
    "cookie",
    [
        b"uid=u-1",
        b"theme=dark; uid=u-2",
        b'uid="u-3"; a=b',
        b"uid= u-4 ;x=1",
        b"a=b;uid=u-5",
        b"myuid=u-6; uid=u-7",
        b"uid=u-8; uid=u-9",
        b"uid=\xe9t\xe9",
        b"uid=",
        b'uid=""',
        b"myuid=u-10",
        b"\tuid=u-11",
        b"uid",
        b"",
    ],
)
def test_it_reads_the_cookie_as_python_does(cookie: bytes) -> None:
    document = _flags(NATIVE)
    fast = FastLine(compile_document(document), HEAD, TAIL)
    assert fast.native is not None
    user = _cookie_value(cookie, b"uid=")
    expected = None if user is None else fast.native.header(user)
    assert fast.native.cookie_header(cookie, b"uid=") == expected


def test_a_router_answers_from_it_and_keeps_nothing() -> None:
    document = _flags(NATIVE)
    flags, full = RequestFlags("cookie:uid", FlagSet(document)), FlagSet(document)
    by_header = RequestFlags("header:X-User", FlagSet(document))
    assert flags._native is not None
    for i in range(200):
        expected = f"{HEAD.decode()}{header_value(full, Context(user_id=f'u-{i}'))}\r\n"
        assert flags.line([], f"a=1; uid=u-{i}".encode()) == expected.encode()
        assert by_header.line([(b"x-user", f" u-{i} ".encode())], None) == expected.encode()
    assert not flags._lines and not flags._cookies
    # no user: the SDKs' random stickiness, in Python
    assert flags.line([], b"theme=dark").startswith(HEAD)
    assert by_header.line([], None).startswith(HEAD)


def test_without_it_a_router_answers_the_same_in_python(monkeypatch: pytest.MonkeyPatch) -> None:
    document = _flags(NATIVE)
    with_c = RequestFlags("cookie:uid", FlagSet(document))
    monkeypatch.setattr(fastline, "Line", None)  # as installed without a C compiler
    without = RequestFlags("cookie:uid", FlagSet(document))
    assert with_c._native is not None and without._native is None
    for i in range(300):
        cookie = f"uid=u-{i}".encode()
        assert without.line([], cookie) == with_c.line([], cookie)


def test_a_long_list_of_ids_answers_as_a_short_one() -> None:
    # up to 16 ids are compared in place, more are looked up in a set
    for count in (3, 16, 17, 40):
        ids = [f"u-{i * 7}" for i in range(count)] + ["ü-1"]
        state = {"enabled": True, "rollout": 10, "user_ids": ids}
        document = _flags({"listed": state, "rollout": STATES["rollout"]})
        full, fast = FlagSet(document), FastLine(compile_document(document), HEAD, TAIL)
        assert fast.native is not None
        for raw in [f"u-{i}".encode() for i in range(300)] + [b"\xfc-1", b"\xfc-2"]:
            expected = header_value(full, Context(user_id=raw.decode("latin-1"))).encode()
            assert fast.native.header(raw) == HEAD + expected + TAIL, (count, raw)


def test_a_request_head_gets_the_line_as_its_last_header() -> None:
    document = _flags(NATIVE)
    flags = RequestFlags("cookie:uid", FlagSet(document))
    guarded = RequestFlags("cookie:uid", FlagSet(document), ["rollout"], lambda a: _Counter())
    assert flags._native is not None
    head = b"GET / HTTP/1.1\r\nHost: shop\r\nCookie: uid=u-5\r\n\r\n"
    line = flags.line([], b"uid=u-5")
    for router in (flags, guarded):
        added, _ = router.added_to(head, [], b"uid=u-5")
        assert added == head[:-2] + line + b"\r\n"
    # no user: the SDKs' random stickiness, still the last header
    added, _ = flags.added_to(head, [], b"theme=dark")
    assert added.startswith(head[:-2] + HEAD) and added.endswith(b"\r\n\r\n")


class _Counter:
    def observe(self, status: int, latency: float) -> None:
        pass


def test_the_answers_of_guarded_flags_are_counted_as_in_python(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    document = _flags(NATIVE)
    guarded = ["four-variants", "ids-and-variants", "rollout"]

    def router() -> tuple[RequestFlags, list[str]]:
        counted: list[str] = []

        class Counter:
            def __init__(self, answer: str) -> None:
                self.answer = answer

            def observe(self, status: int, latency: float) -> None:
                counted.append(self.answer)

        return RequestFlags("cookie:uid", FlagSet(document), guarded, Counter), counted

    (with_c, in_c), _ = router(), monkeypatch.setattr(fastline, "Line", None)
    without, in_python = router()
    assert with_c._native is not None and without._native is None
    for i in range(300):
        cookie = f"theme=dark; uid=u-{i}".encode()
        for flags in (with_c, without):
            line, observers = flags.answer([], cookie)
            assert line == without.line([], cookie)
            assert len(observers) == len(guarded)
            for observer in observers:
                observer.observe(200, 0.01)
    assert in_c == in_python and len(set(in_c)) > len(guarded) * 2
