"""Reading YAML text into plain Python data plus the line:column of every key and value."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scalarbool import ScalarBoolean

from conveyor.config.errors import ConfigError, ConfigIssue
from conveyor.config.limits import (
    MAX_DEPTH,
    BoundedComposer,
    BoundedScanner,
    LimitExceeded,
    too_deep,
)

DocPath = tuple[str | int, ...]
Position = tuple[int, int]


@dataclass
class SourceMap:
    """1-based (line, column) of each value and each mapping key, by document path.

    A path is a tuple of keys and list indexes, like ("environments", "production",
    "steps", 1); the empty path is the top-level mapping.
    """

    values: dict[DocPath, Position] = field(default_factory=dict)
    keys: dict[DocPath, Position] = field(default_factory=dict)

    def value(self, path: DocPath) -> Position:
        """Where the value at path starts, or the nearest enclosing value that is known."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.values:
                return self.values[path[:end]]
        return (1, 1)

    def key(self, path: DocPath) -> Position:
        """Where the key of the mapping entry at path is, falling back to its value."""
        return self.keys.get(path) or self.value(path)


def read_yaml(text: str, filename: str) -> tuple[Any, SourceMap]:
    """Parse one YAML document into dicts, lists and scalars, with its SourceMap.

    Raises ConfigError for YAML syntax errors, duplicate keys, recursive aliases, and
    documents beyond the bounds of conveyor.config.limits (checked as the parser goes,
    so that a hostile text costs no more than the bounds allow).
    """
    yaml = YAML(typ="rt")
    yaml.Scanner = BoundedScanner
    yaml.Composer = BoundedComposer
    try:
        document = yaml.load(text)
    except MarkedYAMLError as exc:
        raise ConfigError([_syntax_issue(exc, text, filename)]) from None
    except ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        character = chr(exc.character) if isinstance(exc.character, int) else exc.character
        message = (
            f"expected printable text, found the control character {character!r} "
            "(is it a binary file?): remove it, or write it as an escape in double quotes"
        )
        raise ConfigError([ConfigIssue(filename, line, column, message)]) from None
    except YAMLError as exc:
        raise ConfigError([ConfigIssue(filename, 1, 1, f"invalid YAML: {exc}")]) from None
    except Exception as exc:
        # The parser failing in a way of its own (an assertion, say) still means this text
        # is no config; the server and `conveyor validate` report it like any other error.
        message = (
            f"the YAML parser could not read this file ({type(exc).__name__}: {exc}); "
            "expected plain YAML: look for a key that is a list or mapping ('? '), "
            "or an anchor merged into itself"
        )
        raise ConfigError([ConfigIssue(filename, 1, 1, message)]) from None
    source = SourceMap()
    if isinstance(document, CommentedMap | CommentedSeq):
        source.values[()] = (document.lc.line + 1, document.lc.col + 1)
    converter = _Converter(source, filename)
    return converter.plain(document, ()), source


class _Converter:
    """Copies ruamel's document into plain data, aliases expanded."""

    def __init__(self, source: SourceMap, filename: str) -> None:
        self.source = source
        self.filename = filename
        self.open: set[int] = set()  # containers being converted, to catch alias loops

    def plain(self, node: Any, path: DocPath) -> Any:
        if isinstance(node, CommentedMap | CommentedSeq):
            if id(node) in self.open:
                line, column = self.source.value(path)
                message = "an alias refers to a mapping or list that contains it"
                raise ConfigError([ConfigIssue(self.filename, line, column, message)])
            if len(path) >= MAX_DEPTH:
                # BoundedComposer stops this first; here only so as never to overflow the stack
                line, column = self.source.value(path)
                message = too_deep(through_alias=True)
                raise ConfigError([ConfigIssue(self.filename, line, column, message)])
            self.open.add(id(node))
            try:
                if isinstance(node, CommentedMap):
                    return self._mapping(node, path)
                return self._sequence(node, path)
            finally:
                self.open.discard(id(node))
        return _scalar(node)

    def _mapping(self, node: CommentedMap, path: DocPath) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for raw_key, raw_value in node.items():
            key = _key_text(raw_key)
            child = (*path, key)
            key_pos = _lc(node.lc.key, raw_key)
            value_pos = _lc(node.lc.value, raw_key)
            if key_pos is not None:
                self.source.keys[child] = key_pos
            # An empty value is reported where the next line starts; its key is clearer.
            if raw_value is None and key_pos is not None:
                value_pos = key_pos
            if value_pos is not None:
                self.source.values[child] = value_pos
            out[key] = self.plain(raw_value, child)
        return out

    def _sequence(self, node: CommentedSeq, path: DocPath) -> list[Any]:
        out: list[Any] = []
        for index, item in enumerate(node):
            child = (*path, index)
            position = _lc(node.lc.item, index)
            if position is not None:
                self.source.values[child] = position
            out.append(self.plain(item, child))
        return out


def _lc(lookup: Any, key: Any) -> Position | None:
    # Keys pulled in by a `<<` merge have no position of their own.
    try:
        line, column = lookup(key)
    except (KeyError, IndexError, TypeError):
        return None
    return (int(line) + 1, int(column) + 1)


def _key_text(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    return str(key)


def _scalar(node: Any) -> Any:
    # ruamel's round-trip types subclass str, int and float; hand out the plain ones.
    if node is None or isinstance(node, bool):
        return node
    if isinstance(node, TaggedScalar):
        return str(node.value)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, int):
        # ScalarBoolean (an anchored true/false) is an int subclass.
        return bool(node) if isinstance(node, ScalarBoolean) else int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, date):
        # An unquoted 2024-01-01 is a timestamp in YAML; every field wants text.
        return node.isoformat()
    return str(node)


def _syntax_issue(exc: MarkedYAMLError, text: str, filename: str) -> ConfigIssue:
    message, at_opening = _syntax_message(exc, text)
    mark = exc.problem_mark or exc.context_mark
    if at_opening:
        # The end of the file is a useless place to point at: show the opening quote
        # or bracket.
        mark = exc.context_mark or mark
    line = mark.line + 1 if mark is not None else 1
    column = mark.column + 1 if mark is not None else 1
    return ConfigIssue(filename, line, column, message)


def _syntax_message(exc: MarkedYAMLError, text: str) -> tuple[str, bool]:
    """What is wrong, and whether to point at what was left open rather than the error."""
    problem = exc.problem or ""
    context = exc.context or ""
    if isinstance(exc, DuplicateKeyError):
        return _duplicate_key_message(exc, text), False
    if isinstance(exc, LimitExceeded):
        return problem, False
    if "\\t" in problem or "tab" in problem:
        return "found a tab character; expected spaces (YAML indentation cannot use tabs)", False
    if "quoted scalar" in context and "end of stream" in problem:
        return "unclosed quote: expected a closing quote for the string that starts here", True
    if "flow" in context and "stream end" in problem:
        closing = "]" if "sequence" in context else "}"
        return f"unclosed bracket: expected a {closing!r} to close the one that opens here", True
    if "mapping values are not allowed" in problem:
        return (
            "unexpected ':' here; expected this line to be indented like its siblings, "
            "or quotes around a value that contains ': '"
        ), False
    if "expected <block end>" in problem:
        return "bad indentation: expected this line to line up with the keys above it", False
    if "single document" in context:
        return "expected a single YAML document, found a second one", False
    detail = "; ".join(part for part in (context, problem) if part)
    return f"invalid YAML: {detail or exc}", False


def _duplicate_key_message(exc: MarkedYAMLError, text: str) -> str:
    match = re.search(r'found duplicate key "(.*?)" with value', exc.problem or "")
    if match is None:
        return "duplicate key; expected each key once in a mapping"
    key = match.group(1)
    message = f"duplicate key {key!r}; expected each key once in a mapping"
    start, mark = exc.context_mark, exc.problem_mark
    if start is None or mark is None:
        return message
    lines = text.splitlines()
    for number in range(start.line, mark.line):
        line = lines[number]
        indent = len(line) - len(line.lstrip(" "))
        rest = line[indent:]
        if indent == mark.column and re.match(rf"""["']?{re.escape(key)}["']?\s*:""", rest):
            return f"{message} (first on line {number + 1})"
    return message
