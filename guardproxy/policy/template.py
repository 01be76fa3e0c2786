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
from dataclasses import dataclass
from typing import Any

from guardproxy.policy import cel

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][\w.]*)\}")
VALUE_LIMIT = 80
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class Template:
    text: str
    paths: tuple[tuple[str, ...], ...]

    @property
    def static(self) -> bool:
        return not self.paths

    def render(self, lookup: Callable[[tuple[str, ...]], Any]) -> str:
        if self.static:
            return self.text
        return _PLACEHOLDER.sub(lambda m: _show(lookup(tuple(m.group(1).split(".")))), self.text)


def _show(value: Any) -> str:
    if isinstance(value, list):
        text = ", ".join(str(v) for v in value)
    elif isinstance(value, bool):
        text = str(value).lower()
    elif value is None:
        text = ""
    else:
        text = str(value)
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
