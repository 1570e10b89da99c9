"""Tables for the evaluator's pieces: hashes, versions, Rust-dialect patterns."""

from __future__ import annotations

import pytest

from conveyor.flags import semver
from conveyor.flags.hashing import normalized_hash, normalized_variant_hash
from conveyor.flags.regex import compile_pattern


@pytest.mark.parametrize(
    ("identifier", "group", "bucket", "variant_bucket"),
    [
        # what the Node SDK's murmurhash3js 3.0.1 gives (x86 hash32, seed 0 and 86028157)
        ("123", "gr1", 73, 96),
        ("999", "groupX", 25, 60),
        ("123123123", "demo", 44, 99),
        ("4", "", 90, 18),
    ],
)
def test_normalized_hash(identifier: str, group: str, bucket: int, variant_bucket: int) -> None:
    assert normalized_hash(identifier, group) == bucket
    assert normalized_variant_hash(identifier, group, 100) == variant_bucket


@pytest.mark.parametrize(
    ("low", "high"),
    [
        ("1.0.0-alpha", "1.0.0-alpha.1"),
        ("1.0.0-alpha.1", "1.0.0-alpha.beta"),
        ("1.0.0-alpha.beta", "1.0.0-beta"),
        ("1.0.0-beta.2", "1.0.0-beta.11"),
        ("1.0.0-rc.1", "1.0.0"),
        ("1.9.0", "1.10.0"),
    ],
)
def test_semver_precedence(low: str, high: str) -> None:
    a, b = semver.parse(low), semver.parse(high)
    assert a is not None and b is not None
    assert a < b


@pytest.mark.parametrize("text", ["v1.2.3", "1.2", "01.2.3", "1.2.3-", "not a semver", ""])
def test_semver_refuses(text: str) -> None:
    assert semver.parse(text) is None


def test_semver_ignores_build_metadata() -> None:
    assert semver.parse("1.2.3+abc") == semver.parse("1.2.3")


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        ("^[[:digit:]]+$", "123", True),
        ("^a(?i)bc$", "aBC", True),
        ("^a(?i)bc$", "ABC", False),
        ("(x(?i)y)z", "xYz", True),
        ("(x(?i)y)z", "xYZ", False),
    ],
)
def test_rust_dialect(pattern: str, text: str, matches: bool) -> None:
    compiled = compile_pattern(pattern, False)
    assert compiled is not None
    assert (compiled.search(text) is not None) is matches


@pytest.mark.parametrize("pattern", ["(?=a)", "(?<!a)b", r"(a)\1", "[[:nope:]]", "(unclosed"])
def test_rust_refuses(pattern: str) -> None:
    assert compile_pattern(pattern, False) is None
