"""Errors every command reports the same way: one line, exit code 2."""


class UsageError(Exception):
    """Bad input from the command line: reported in one line, exit code 2."""
