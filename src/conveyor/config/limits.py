"""How large a conveyor.yml may be: bounds that keep a hostile file from exhausting the server.

Anyone who can push to a repository writes its conveyor.yml, and the server parses it.
YAML lets a small text expand into a huge document (aliases of aliases: a "billion
laughs") or nest deep enough to exhaust the parser's recursion, and the YAML parser is
pure Python (about 40,000 nodes a second). These bounds hold parsing to about a
second and a few megabytes whatever the file; a real config is a few kilobytes with a
few hundred nodes, far inside them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml.composer import Composer
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.events import AliasEvent, ScalarEvent
from ruamel.yaml.scanner import RoundTripScanner

from conveyor.config.errors import ConfigError, ConfigIssue

# The file's size in bytes.
MAX_CONFIG_BYTES = 1024 * 1024
# Levels of nesting, aliases expanded: the top-level mapping is 1, its values are 2, and
# so on down to the deepest value.
MAX_DEPTH = 64
# Keys, values and list items, aliases expanded.
MAX_NODES = 10_000
# Characters of all scalars together, aliases expanded: without aliases the file's size
# bounds them already, so this only stops a long text repeated through aliases.
MAX_TEXT = MAX_CONFIG_BYTES


def read_config_bytes(path: Path) -> bytes:
    """The bytes of a config file, refused (ConfigError) beyond MAX_CONFIG_BYTES.

    Never reads more than one byte past the limit, however large the file.
    """
    with path.open("rb") as fh:
        data = fh.read(MAX_CONFIG_BYTES + 1)
        if len(data) <= MAX_CONFIG_BYTES:
            return data
        size = fh.seek(0, 2)
    raise ConfigError([_oversize(str(path), size, data)])


def check_text_size(text: str, filename: str) -> None:
    """Refuse text beyond MAX_CONFIG_BYTES once encoded (for text that came from no file)."""
    if len(text) <= MAX_CONFIG_BYTES // 4:
        return  # even at four bytes a character it is within the limit
    data = text.encode("utf-8", "surrogatepass")
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([_oversize(filename, len(data), data)])


def _oversize(filename: str, size: int, data: bytes) -> ConfigIssue:
    # Point at the first byte past the limit: the position tells how far over it is.
    line = data.count(b"\n", 0, MAX_CONFIG_BYTES) + 1
    column = MAX_CONFIG_BYTES - data.rfind(b"\n", 0, MAX_CONFIG_BYTES)
    message = (
        f"the file is {size:,} bytes, over the limit of {MAX_CONFIG_BYTES:,} (1 MiB) "
        "from here on; expected a config of a few kilobytes: keep data in other files "
        "of the repository and read them from the steps"
    )
    return ConfigIssue(filename, line, column, message)


class LimitExceeded(MarkedYAMLError):
    """A document beyond one of the bounds: problem says which, problem_mark where."""


class BoundedComposer(Composer):
    """ruamel's composer (YAML events to a node tree), held to the bounds as it goes.

    It counts every node with each alias weighing what it repeats, so a billion laughs
    or a chain of `<<` merges stops at its first alias past the bounds, before ruamel
    builds anything from it; and it stops nesting before its recursion could exhaust
    the stack (Python's limit is about 330 levels of it).
    """

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self.nodes = 0
        self.text = 0
        # for each anchor: the nodes, characters and levels an alias to it repeats
        self.weights: dict[Any, tuple[int, int, int]] = {}
        # for each node being composed, the height of its tallest child so far
        self.tallest: list[int] = []

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        mark = event.start_mark
        depth = len(self.tallest) + 1
        if isinstance(event, AliasEvent):
            nodes, text, height = self.weights.get(event.anchor, (1, 0, 1))
            self._grow(nodes, text, mark, alias=True)
            if depth - 1 + height > MAX_DEPTH:
                raise LimitExceeded(problem=too_deep(through_alias=True), problem_mark=mark)
            self._child(height)
            return super().compose_node(parent, index)
        if depth > MAX_DEPTH:
            raise LimitExceeded(problem=too_deep(through_alias=False), problem_mark=mark)
        nodes, text = self.nodes, self.text
        self._grow(1, len(event.value) if isinstance(event, ScalarEvent) else 0, mark)
        self.tallest.append(0)
        try:
            node = super().compose_node(parent, index)
        finally:
            height = self.tallest.pop() + 1
        self._child(height)
        if event.anchor is not None:
            self.weights[event.anchor] = (self.nodes - nodes, self.text - text, height)
        return node

    def _grow(self, nodes: int, text: int, mark: Any, *, alias: bool = False) -> None:
        self.nodes += nodes
        self.text += text
        if self.nodes > MAX_NODES:
            raise LimitExceeded(problem=too_many_nodes(through_alias=alias), problem_mark=mark)
        if self.text > MAX_TEXT:
            raise LimitExceeded(problem=too_much_text(), problem_mark=mark)

    def _child(self, height: int) -> None:
        if self.tallest:
            self.tallest[-1] = max(self.tallest[-1], height)


class BoundedScanner(RoundTripScanner):
    """ruamel's round-trip scanner (text to tokens), stopping past MAX_DEPTH brackets.

    It reads ahead up to 1,024 characters to tell whether a bracket starts a key, with
    a cost that grows with the number of brackets open: 20,000 `[` on a line would take
    seconds to reach the composer's own check of the depth.
    """

    def fetch_flow_collection_start(self, TokenClass: Any, to_push: str) -> None:
        # a collection inside MAX_DEPTH open brackets is at least one level too deep
        if self.flow_level >= MAX_DEPTH:
            mark = self.reader.get_mark()
            raise LimitExceeded(problem=too_deep(through_alias=False), problem_mark=mark)
        super().fetch_flow_collection_start(TokenClass, to_push)


def too_deep(*, through_alias: bool) -> str:
    """The message for nesting beyond MAX_DEPTH."""
    how = "aliases (*name) nest" if through_alias else "mappings and lists nest"
    return (
        f"{how} this value more than {MAX_DEPTH} levels deep, over the limit; "
        "expected a config a few levels deep: flatten it"
    )


def too_many_nodes(*, through_alias: bool) -> str:
    """The message for more than MAX_NODES keys and values."""
    if through_alias:
        return (
            f"this alias brings the config over {MAX_NODES:,} keys and values, the limit "
            "(aliases of aliases multiply: a 'billion laughs'); expected a few hundred: "
            "repeat less through aliases"
        )
    return (
        f"the config has more than {MAX_NODES:,} keys and values from here on, over the "
        "limit; expected a few hundred: keep data in other files of the repository"
    )


def too_much_text() -> str:
    """The message for scalars that, repeated through aliases, exceed MAX_TEXT."""
    return (
        f"this alias brings the text of the config over {MAX_TEXT:,} characters in all, "
        "the limit; expected each long text written once: repeat less through aliases"
    )
