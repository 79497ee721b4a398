"""Errors the CLI turns into a clear message and exit status 2 (bad input, nothing started)."""

from __future__ import annotations


class UserError(Exception):
    """Bad input: a message naming the key or flag, and a hint saying how to fix it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"
