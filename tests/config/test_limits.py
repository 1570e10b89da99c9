"""The bounds of conveyor.yml: hostile files end in a ConfigError at file:line:col, fast."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.config import ConfigError, load_config, parse_config
from conveyor.config.limits import MAX_CONFIG_BYTES, MAX_DEPTH, MAX_NODES
from tests.config.hostile import (
    HOSTILE,
    billion_laughs,
    large,
    nested_block_maps,
    nested_brackets,
    nested_maps,
)


def _deep_alias() -> str:
    # each part nests 40 and 30 levels: only together, through the alias, are they too deep
    return "app: shop\na: &a " + "[" * 40 + "1" + "]" * 40 + "\nb: " + "[" * 30 + "*a]" + "]" * 29


def _merge_chain(length: int) -> str:
    maps = "".join(f"m{i}: &m{i} {{<<: *m{i - 1}, k{i}: 1}}\n" for i in range(1, length))
    return "app: shop\nm0: &m0 {k0: 1}\n" + maps


def _repeated_text() -> str:
    return "app: shop\nlong: &long '" + "x" * 300_000 + "'\nmore: [*long, *long, *long, *long]\n"


# name, text, line, column, a phrase of the message
REFUSED = [
    ("billion laughs", billion_laughs(), 6, 10, "a 'billion laughs'"),
    ("20,000 nested brackets", nested_brackets(), 2, 4 + MAX_DEPTH, "more than 64 levels"),
    ("5,000 nested maps", nested_maps(), 2, 253, "more than 64 levels deep"),
    ("block maps 100 deep", nested_block_maps(100), 65, 64, "mappings and lists nest"),
    ("too deep through an alias", _deep_alias(), 3, 34, "aliases (*name) nest this value"),
    ("a merge chain", _merge_chain(300), 64, 16, "aliases (*name) nest this value"),
    (
        "20,000 values",
        "app: shop\nx: [" + ", ".join(["1"] * 20_000) + "]\n",
        2,
        5 + 3 * (MAX_NODES - 5),
        "more than 10,000 keys and values",
    ),
    ("long text through aliases", _repeated_text(), 3, 22, "text of the config over 1,048,576"),
    # 32 bytes of settings, then lines of 100 bytes: byte 1,048,576 is the 44th of line 10,489
    ("over 1 MiB", large(MAX_CONFIG_BYTES + 1000), 10_489, 45, "over the limit of 1,048,576"),
    ("a NUL byte", "app: shop\nbranch: ma\0in\n", 2, 11, "control character '\\x00'"),
]


@pytest.mark.parametrize(
    ("text", "line", "column", "phrase"),
    [
        pytest.param(text, line, column, phrase, id=name)
        for name, text, line, column, phrase in REFUSED
    ],
)
def test_hostile_config_is_refused_where_it_goes_wrong(
    text: str, line: int, column: int, phrase: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "conveyor.yml")
    assert len(caught.value.issues) == 1, str(caught.value)
    issue = caught.value.issues[0]
    assert (issue.file, issue.line, issue.column) == ("conveyor.yml", line, column), str(issue)
    assert phrase in issue.message, issue.message
    assert "expected" in issue.message  # and says what to do


# name, text: within every bound, so the only complaint is about the unknown key x
ACCEPTED = [
    ("64 levels", "app: shop\nx: " + "[" * (MAX_DEPTH - 2) + "1" + "]" * (MAX_DEPTH - 2) + "\n"),
    ("a 64-level block", nested_block_maps(MAX_DEPTH - 1)),
    ("9,000 values", "app: shop\nx: [" + ", ".join(["1"] * 9_000) + "]\n"),
    ("aliases within bounds", billion_laughs(4).replace("a0:", "x:", 1)),
    ("a merge", "app: shop\nx: &d {a: 1}\ny: {<<: *d, b: 2}\n"),
    ("1 MiB", large(MAX_CONFIG_BYTES).replace("test:", "x:")),
]


@pytest.mark.parametrize("text", [pytest.param(text, id=name) for name, text in ACCEPTED])
def test_config_within_the_bounds_is_parsed(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "conveyor.yml")
    messages = [issue.message for issue in caught.value.issues]
    assert messages[0].startswith("unknown key 'x'"), messages


@pytest.mark.parametrize(
    ("content", "phrase"),
    [pytest.param(content, phrase, id=name) for name, content, phrase in HOSTILE],
)
def test_hostile_file_is_refused_with_a_position(
    tmp_path: Path, content: str | bytes, phrase: str
) -> None:
    path = tmp_path / "conveyor.yml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert text.startswith(f"{path}:"), text
    issue = caught.value.issues[0]
    assert issue.line >= 1 and issue.column >= 1, text
    assert phrase in text, text


def test_a_large_file_is_read_no_further_than_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "conveyor.yml"
    with path.open("wb") as fh:  # 1 GiB, sparse: reading it all would show
        fh.truncate(1 << 30)
    with pytest.raises(ConfigError, match=r"conveyor.yml:1:1048577: the file is 1,073,741,824"):
        load_config(path)


def test_binary_garbage_points_at_the_first_bad_byte(tmp_path: Path) -> None:
    path = tmp_path / "conveyor.yml"
    path.write_bytes(b"app: shop\n\x89PNG\r\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}:2:1: expected UTF-8 text, found bytes that are not (is it a binary file?): "
        "save conveyor.yml as UTF-8 text"
    )
