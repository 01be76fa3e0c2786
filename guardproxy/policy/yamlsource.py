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
    severity: str = "error"  # error | warning | notice (information: never fails a lint)

    def __str__(self) -> str:
        where = f" [{self.rule}]" if self.rule else ""
        hint = f"\n    hint: {self.hint}" if self.hint else ""
        return f"{self.position}: {self.severity}{where}: {self.message}{hint}"


@dataclass
class ScalarInfo:
    """Where each source line of a scalar's text starts, to map offsets back to the file.

    YAML folds multi-line scalars (``>-`` blocks, long plain or quoted values) into one
    line; the text of each source line still appears in order, one separator apart.
    """

    position: Position
    segments: list[tuple[int, int, int]]  # (line, column, length), 1-based


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
        if info is None or not info.segments:
            return self.position(path)
        value = self.data_at(path)
        lines = value.split("\n") if isinstance(value, str) else [""]
        offset = sum(len(text) + 1 for text in lines[: line - 1]) + column - 1
        for seg_line, seg_column, length in info.segments:
            if offset <= length:
                return Position(info.position.file, seg_line, seg_column + offset)
            offset -= length + 1
        last_line, last_column, length = info.segments[-1]
        return Position(info.position.file, last_line, last_column + length)

    def data_at(self, path: Path_) -> Any:
        current = self.data
        for part in path:
            try:
                current = current[part]
            except (KeyError, IndexError, TypeError):
                return None
        return current


def _pos(file: str, node: yaml.Node) -> Position:
    return Position(file, node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self.positions: dict[Path_, Position] = {}
        self.scalars: dict[Path_, ScalarInfo] = {}
        self._constructor = yaml.SafeLoader("")
        self._open: set[int] = set()  # collections being built: an alias to one is a cycle

    def build(self, node: yaml.Node, path: Path_) -> Any:
        here = _pos(self.file, node)
        self.positions[path] = here
        if id(node) in self._open:
            self.problems.append(
                Problem(here, "this YAML alias refers to a value that contains it", "remove it")
            )
            return None
        if node.tag and not node.tag.startswith(_STANDARD_TAG):
            self.problems.append(
                Problem(
                    here,
                    f"`{node.tag}` is read by YAML as a tag, not as part of the value",
                    "quote the value, or write CEL as a `>-` block on the following lines",
                )
            )
            return None
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            self._open.add(id(node))
            try:
                if isinstance(node, yaml.MappingNode):
                    return self._mapping(node, path)
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            finally:
                self._open.discard(id(node))
        assert isinstance(node, yaml.ScalarNode)
        return self._scalar(node, path, here)

    def construct(self, node: yaml.Node) -> tuple[Any, bool]:
        """The Python value of a scalar, or a problem when YAML cannot build one."""
        try:
            return self._constructor.construct_object(node), True
        except Exception as error:  # ValueError, ConstructorError...: never a traceback
            if node.tag == _STANDARD_TAG + "merge":
                message, hint = "YAML merge keys (`<<`) are not supported", "write the keys out"
            else:
                reason = getattr(error, "problem", None) or str(error)
                message = f"YAML cannot read {str(node.value)[:40]!r}: {reason}"
                hint = "quote it if it is text"
            self.problems.append(Problem(_pos(self.file, node), message, hint))
            return None, False

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key, ok = self.construct(key_node)
            if not ok:
                key = str(key_node.value)
            elif not isinstance(key, str):
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
        value, _ = self.construct(node)
        if isinstance(value, bool) and node.value.lower() not in _BOOL_WORDS:
            self.problems.append(
                Problem(
                    here,
                    f"`{node.value}` is read by YAML 1.1 as the boolean {str(value).lower()}",
                    f'quote it ("{node.value}") if you meant text, '
                    f"or write {str(value).lower()} if you meant a boolean",
                )
            )
        self.scalars[path] = ScalarInfo(here, _segments(node))
        return value


def _segments(node: yaml.ScalarNode) -> list[tuple[int, int, int]]:
    """(line, column, length) of the text on each source line of a scalar."""
    buffer = node.start_mark.buffer
    if buffer is None:
        return []
    raw = buffer[node.start_mark.pointer : node.end_mark.pointer]
    lines = raw.split("\n")
    first_line = node.start_mark.line + 1
    block = node.style in ("|", ">")
    # A block scalar loses only its own indentation (that of its first non-empty
    # line); deeper indentation is part of the text.
    indent = next((len(t) - len(t.lstrip(" ")) for t in lines[1:] if t.strip()), 0)
    segments = []
    after_text = False
    for i, text in enumerate(lines):
        if i == 0:
            if block:
                continue  # the indicator line holds no text
            quote = 1 if node.style in ("'", '"') else 0
            body = text[quote:].rstrip()
            if node.style in ("'", '"') and len(lines) == 1:
                body = body[:-1]
            segments.append((first_line, node.start_mark.column + 1 + quote, len(body)))
            after_text = True
            continue
        if not text.strip():
            # An empty line is a line break of its own, except that folding (plain,
            # quoted and `>` scalars) absorbs the break that ends the line before it.
            if node.style == "|" or not after_text:
                segments.append((first_line + i, indent + 1, 0))
            after_text = False
            continue
        after_text = True
        if block:
            segments.append((first_line + i, indent + 1, len(text) - indent))
            continue
        stripped = text.lstrip(" ")
        segments.append((first_line + i, len(text) - len(stripped) + 1, len(stripped.rstrip())))
    return segments


def _empty(node: yaml.Node) -> bool:
    """A document with nothing in it, e.g. after a trailing `---`."""
    return (
        isinstance(node, yaml.ScalarNode)
        and node.value == ""
        and node.style is None
        and node.tag == _STANDARD_TAG + "null"
    )


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
        hint = "quote values that contain `: `, ` #`, `{`, `}` or `,`; write CEL as a `>-` block"
        return [], [Problem(where, f"YAML syntax: {problem}", hint)]
    except yaml.YAMLError as error:
        return [], [Problem(Position(name, 1, 1), f"YAML: {error}")]
    except RecursionError:
        return [], [Problem(Position(name, 1, 1), "YAML: the file is nested too deeply")]
    for node in nodes:
        if node is None or _empty(node):
            continue
        builder = _Builder(name)
        try:
            data = builder.build(node, ())
        except RecursionError:
            problems.append(Problem(_pos(name, node), "YAML: the document is nested too deeply"))
            continue
        problems.extend(builder.problems)
        documents.append(Document(data, name, _pos(name, node), builder.positions, builder.scalars))
    return documents, problems
