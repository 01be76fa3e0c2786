"""Messages with ``{action.resource.name}`` placeholders, rendered without CEL.

Most agent-facing messages only need to name what was stopped. A placeholder is a
field path checked against the input schema at load time; its value is rendered
short and on one line, because request-controlled text echoed into an agent's
context is a prompt-injection channel. CEL ``messageExpression`` remains for the
rest (and is much slower).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from guardproxy.policy import cel

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][\w.]*)\}")
VALUE_LIMIT = 80
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class Template:
    text: str
    paths: tuple[tuple[str, ...], ...]
    _segments: tuple[tuple[str, tuple[str, ...]], ...] = field(
        init=False, repr=False, compare=False
    )
    """The text cut at its placeholders, once: (literal before it, its path) per
    placeholder, then (the rest, ()). Rendering joins them instead of searching the
    text again on every decision."""

    def __post_init__(self) -> None:
        segments: list[tuple[str, tuple[str, ...]]] = []
        start = 0
        for found in _PLACEHOLDER.finditer(self.text):
            segments.append((self.text[start : found.start()], tuple(found.group(1).split("."))))
            start = found.end()
        segments.append((self.text[start:], ()))
        object.__setattr__(self, "_segments", tuple(segments))

    @property
    def static(self) -> bool:
        return not self.paths

    def render(self, lookup: Callable[[tuple[str, ...]], Any]) -> str:
        """The text with each placeholder replaced by its value, shown short and on one
        line (every placeholder, including one the load-time check rejected)."""
        if self.static:
            return self.text
        parts: list[str] = []
        for literal, path in self._segments:
            parts.append(literal)
            if path:
                parts.append(_show(lookup(path)))
        return "".join(parts)


_PLAIN = frozenset({int, float})
"""Types whose ``str`` is their text and never holds a control character."""


def _show(value: Any) -> str:
    if type(value) in _PLAIN:
        text = str(value)
        return text if len(text) <= VALUE_LIMIT else text[: VALUE_LIMIT - 3] + "..."
    if isinstance(value, list):
        text = ", ".join(str(v) for v in value)
    elif isinstance(value, bool):
        text = str(value).lower()
    elif value is None:
        text = ""
    else:
        text = str(value)
    if not (text.isascii() and text.isprintable()):  # else it has no control character
        text = _UNSAFE.sub(" ", text)
    return text if len(text) <= VALUE_LIMIT else text[: VALUE_LIMIT - 3] + "..."


def compile_template(text: str) -> tuple[Template, list[str]]:
    """The template and, if any, what is wrong with its placeholders."""
    problems: list[str] = []
    paths: list[tuple[str, ...]] = []
    for found in _PLACEHOLDER.finditer(text):
        path = tuple(found.group(1).split("."))
        problem = cel.check_input_path(path)
        if problem:
            problems.append(f"placeholder {{{found.group(1)}}}: {problem}")
        else:
            paths.append(path)
    return Template(text, tuple(paths)), problems
