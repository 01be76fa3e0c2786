"""Which coding agent a session or a request looks like."""

from __future__ import annotations

from pathlib import PurePath

# executable name -> agent
_COMMANDS = {
    "claude": "claude-code",
    "codex": "codex",
    "cursor-agent": "cursor",
    "cursor": "cursor",
    "aider": "aider",
    "kiro": "kiro",
    "kiro-cli": "kiro",
    "gemini": "gemini-cli",
    "goose": "goose",
    "opencode": "opencode",
    "amp": "amp",
    "copilot": "github-copilot",
}
# user-agent fragment -> agent
_USER_AGENTS = {
    "claude-cli": "claude-code",
    "claude-code": "claude-code",
    "codex_cli": "codex",
    "codex-cli": "codex",
    "aider": "aider",
    "cursor": "cursor",
    "kiro": "kiro",
    "geminicli": "gemini-cli",
}


def agent_from_command(command: list[str] | tuple[str, ...]) -> str:
    """The agent a wrapped command starts, looking through `npx`, `uvx` and friends."""
    for word in command:
        name = PurePath(word).name.lower()
        if name in _COMMANDS:
            return _COMMANDS[name]
        if name in ("npx", "uvx", "pipx", "node", "python", "python3", "env", "sudo"):
            continue
        if word.startswith("-"):
            continue
        break
    return ""


def agent_from_user_agent(user_agent: str) -> str:
    lowered = user_agent.lower()
    return next((agent for frag, agent in _USER_AGENTS.items() if frag in lowered), "")
