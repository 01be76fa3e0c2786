"""YAML reading that remembers where every value came from.

PyYAML's composer keeps a mark for each node; we construct plain Python values
ourselves so every path (``("spec", "rules", 3, "condition")``) maps to a
``file:line:column``, and so the YAML traps that silently change a policy's
meaning are reported instead of accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Path_ = tuple[str | int, ...]

_BOOL_WORDS = {"true", "false"}
_STANDARD_TAG = "tag:yaml.org,2002:"


@dataclass(frozen=True)
class Position:
    file: str
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a policy source, ready to show to its author."""

    position: Position
    message: str
    hint: str = ""
    rule: str = ""
    severity: str = "error"  # error | warning

    def __str__(self) -> str:
        where = f" [{self.rule}]" if self.rule else ""
        hint = f"\n    hint: {self.hint}" if self.hint else ""
        return f"{self.position}: {self.severity}{where}: {self.message}{hint}"


@dataclass
class ScalarInfo:
    """How a scalar was written, to map offsets inside it back to the file."""

    position: Position
    style: str | None  # None (plain), "'", '"', "|", ">"
    indent: int


@dataclass
class Document:
    """One YAML document with the position of every value in it."""

    data: Any
    file: str
    start: Position
    positions: dict[Path_, Position] = field(default_factory=dict)
    scalars: dict[Path_, ScalarInfo] = field(default_factory=dict)

    def position(self, path: Path_) -> Position:
        """Position of ``path``, or of its nearest ancestor that exists."""
        for end in range(len(path), -1, -1):
            found = self.positions.get(path[:end])
            if found is not None:
                return found
        return self.start

    def expression_position(self, path: Path_, line: int, column: int) -> Position:
        """File position of (1-based) ``line``/``column`` inside the scalar at ``path``."""
        info = self.scalars.get(path)
        if info is None:
            return self.position(path)
        if info.style in ("|", ">"):
            return Position(info.position.file, info.position.line + line, info.indent + column)
        quote = 1 if info.style in ("'", '"') else 0
        if line == 1:
            return Position(
                info.position.file, info.position.line, info.position.column + quote + column - 1
            )
        return Position(info.position.file, info.position.line + line - 1, column)


def _pos(file: str, node: yaml.Node) -> Position:
    return Position(file, node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self.positions: dict[Path_, Position] = {}
        self.scalars: dict[Path_, ScalarInfo] = {}
        self._constructor = yaml.SafeLoader("")

    def build(self, node: yaml.Node, path: Path_) -> Any:
        here = _pos(self.file, node)
        self.positions[path] = here
        if node.tag and not node.tag.startswith(_STANDARD_TAG):
            self.problems.append(
                Problem(
                    here,
                    f"`{node.tag}` is read by YAML as a tag, not as part of the value",
                    "quote the value or write CEL as a `>-` block, e.g. condition: >-\\n  !has(...)",
                )
            )
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._scalar(node, path, here)

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self._constructor.construct_object(key_node)
            if not isinstance(key, str):
                self.problems.append(
                    Problem(
                        _pos(self.file, key_node),
                        f"key {key_node.value!r} is read by YAML as {type(key).__name__} "
                        f"{key!r}, not as text",
                        f'quote it: "{key_node.value}"',
                    )
                )
                key = str(key_node.value)
            if key in result:
                self.problems.append(
                    Problem(
                        _pos(self.file, key_node),
                        f"duplicate key `{key}`: YAML would silently keep only the last one",
                        "remove or merge one of them",
                    )
                )
            result[key] = self.build(value_node, (*path, key))
            # Errors about a field point at its key, where its author looks.
            self.positions[(*path, key)] = _pos(self.file, key_node)
        return result

    def _scalar(self, node: yaml.ScalarNode, path: Path_, here: Position) -> Any:
        value = self._constructor.construct_object(node)
        if isinstance(value, bool) and node.value.lower() not in _BOOL_WORDS:
            self.problems.append(
                Problem(
                    here,
                    f"`{node.value}` is read by YAML 1.1 as the boolean {str(value).lower()}",
                    f'quote it ("{node.value}") if you meant text, '
                    f"or write {str(value).lower()} if you meant a boolean",
                )
            )
        indent = 0
        if node.style in ("|", ">"):
            indent = _block_indent(node)
        self.scalars[path] = ScalarInfo(here, node.style, indent)
        return value


def _block_indent(node: yaml.ScalarNode) -> int:
    """Column (0-based) where a block scalar's content starts."""
    buffer = node.start_mark.buffer
    if buffer is None:
        return 0
    text = buffer[node.start_mark.pointer :]
    _, _, rest = text.partition("\n")
    stripped = rest.lstrip(" ")
    return len(rest) - len(stripped)


def read_documents(path: Path, display: str | None = None) -> tuple[list[Document], list[Problem]]:
    """Read every document of a YAML file, with positions and YAML-level problems."""
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return [], [Problem(Position(name, 1, 1), f"cannot read the file: {error}")]
    return read_text(text, name)


def read_text(text: str, name: str) -> tuple[list[Document], list[Problem]]:
    documents: list[Document] = []
    problems: list[Problem] = []
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = Position(name, mark.line + 1, mark.column + 1) if mark else Position(name, 1, 1)
        problem = f"{error.context + ', ' if error.context else ''}{error.problem}"
        hint = "CEL containing `: `, `#`, or starting with `!`, `\"` or `[` must be a `>-` block"
        return [], [Problem(where, f"YAML syntax: {problem}", hint)]
    except yaml.YAMLError as error:
        return [], [Problem(Position(name, 1, 1), f"YAML: {error}")]
    for node in nodes:
        if node is None:
            continue
        builder = _Builder(name)
        data = builder.build(node, ())
        problems.extend(builder.problems)
        documents.append(
            Document(data, name, _pos(name, node), builder.positions, builder.scalars)
        )
    return documents, problems
